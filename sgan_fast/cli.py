"""The `sgan-fast` command."""

from __future__ import annotations

import argparse
import sys
import time


def _cmd_info(args) -> int:
    from . import info

    info()
    return 0


def _cmd_check_head(args) -> int:
    """The soft-label projection head on random features, checked against the reference."""
    import torch

    from .nn import SoftLabelProjectionHead
    from .ops import resolve_impl

    if args.device == "cuda" and not torch.cuda.is_available():
        print("sgan-fast check-head: --device cuda asked for, but torch sees no GPU", file=sys.stderr)
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    B, F, C = args.batch, args.features, args.classes
    head = SoftLabelProjectionHead(F, C, impl=args.impl).to(device)
    h = torch.randn(B, F, device=device, dtype=dtype, requires_grad=True)
    # Soft labels as a classifier would give them: mostly on the true class, some on others.
    y = torch.randint(0, C, (B,), device=device)
    P = torch.softmax(torch.randn(B, C, device=device) + 4 * torch.nn.functional.one_hot(y, C), 1)
    ran = resolve_impl("softlabel_proj", args.impl, device, dtype)
    print(f"sgan-fast check-head: soft-label projection head, B={B} F={F} C={C}, {args.dtype} on {device}")
    print(f"implementation that ran: {ran} (asked for impl={args.impl!r})")
    t0 = time.perf_counter()
    out = head(h, P.to(dtype))
    out.float().square().mean().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) * 1e3
    ref = SoftLabelProjectionHead(F, C, impl="ref").to(device)
    ref.load_state_dict(head.state_dict())
    ref.eval(), head.eval()
    with torch.no_grad():
        diff = (head(h, P.to(dtype)).float() - ref(h, P.to(dtype)).float()).abs().max().item()
    print(f"out[:4] = {[round(v, 4) for v in out[:4].float().tolist()]}, "
          f"|grad h| = {h.grad.float().norm().item():.4f}, first call {ms:.1f} ms")
    print(f"max |{ran} - ref| on the same weights (eval mode): {diff:.2e}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sgan-fast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, and which implementation of each op runs here")
    demo = sub.add_parser("check-head", help="run the soft-label projection head on random "
                          "features and compare it with the reference")
    demo.add_argument("--device", choices=["cpu", "cuda"], default=None,
                      help="default: cuda when a GPU is present, else cpu")
    demo.add_argument("--impl", default="auto", choices=["auto", "ref", "cpu", "cuda", "triton"])
    demo.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    demo.add_argument("--batch", type=int, default=64)
    demo.add_argument("--features", type=int, default=256)
    demo.add_argument("--classes", type=int, default=10)
    demo.add_argument("--seed", type=int, default=0)
    from . import demo_cli
    from .data import prepare_cli
    from .labels import classify_cli
    from .metrics import eval_cli
    from .synth import downstream_cli, synth_cli
    from .train import train_cli
    demo_cli.add_parser(sub)
    prepare_cli.add_parser(sub)
    classify_cli.add_parser(sub)
    train_cli.add_parser(sub)
    eval_cli.add_parser(sub)
    synth_cli.add_parser(sub)
    downstream_cli.add_parser(sub)
    from .presets import apply_config_data
    try:   # a --config's data section: the defaults of the command's data flags
        apply_config_data(sub.choices, argv)
    except (ValueError, FileNotFoundError) as exc:
        print(f"sgan-fast: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    commands = {"info": _cmd_info, "check-head": _cmd_check_head, "demo": demo_cli.run, "prepare": prepare_cli.run,
                "classify": classify_cli.run, "train": train_cli.run_train,
                "sample": train_cli.run_sample, "eval": eval_cli.run,
                "synthesize": synth_cli.run, "downstream": downstream_cli.run}
    from . import distributed
    made_group = False
    try:
        if distributed.launched_by_torchrun() and not distributed.current().distributed:
            made_group = _init_world(args)
        return commands[args.command](args)
    except (ValueError, FileNotFoundError, ImportError, FloatingPointError) as exc:
        # Bad input (flags, files, datasets) gets one clear line, not a traceback; under
        # torchrun every rank prints it (the checks fail on all ranks alike).
        world = distributed.current()
        who = f" [rank {world.rank}]" if world.distributed else ""
        print(f"sgan-fast {args.command}{who}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if made_group:   # a group made by the caller (main() called in a rank) stays its own
            distributed.shutdown()


def _init_world(args) -> bool:
    """The process group of a torchrun launch, for the commands that split their work; True
    when one was made."""
    from . import distributed
    if args.command not in distributed.DISTRIBUTED_COMMANDS:
        _, _, size = distributed.env_world()
        if size > 1:
            raise distributed.DistributedError(
                f"`sgan-fast {args.command}` runs in one process; launch it without torchrun "
                f"(multi-process commands: {', '.join(distributed.DISTRIBUTED_COMMANDS)})")
        return False
    world, _ = distributed.init_distributed(getattr(args, "device", None) or "auto",
                                            backend=getattr(args, "dist_backend", "auto"),
                                            timeout_minutes=getattr(args, "dist_timeout", 30.0))
    return world.distributed


if __name__ == "__main__":
    sys.exit(main())
