"""What every loader shares: seeded flip flags and resumable state."""

from __future__ import annotations

import numpy as np


def step_flips(flip_seed: int, step: int, batch_size: int) -> np.ndarray:
    """bool [B]: which images of step `step` are mirrored, from (flip_seed, step) alone."""
    rng = np.random.default_rng(np.random.SeedSequence([int(flip_seed), int(step), 0xF1]))
    return rng.random(batch_size) < 0.5


class ResumableLoader:
    """state_dict / load_state_dict for a loader with `sampler`, `step` (batches handed out),
    `flip` and `flip_seed`: a resumed loader continues after the last batch handed out."""

    def state_dict(self) -> dict:
        return dict(sampler=dict(self.sampler.state_dict(), step=self.step), flip=self.flip,
                    flip_seed=self.flip_seed)

    def load_state_dict(self, state: dict) -> None:
        if state.get("flip") != self.flip or state.get("flip_seed") != self.flip_seed:
            raise ValueError("loader state was saved with other flip settings "
                             f"(flip={state.get('flip')}, flip_seed={state.get('flip_seed')})")
        self.sampler.load_state_dict(state["sampler"])
        self.step = self.sampler.step
