// The CPU power iteration of one layer, shared by the grouped op (spectral_norm.cpp) and the
// projection head's one-call op (softlabel_proj_autograd.cpp). Plain loops over raw pointers.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace sgan_fast {

template <typename A>
inline A norm_of(const std::vector<A>& x) {
  A ss = 0;
  for (A e : x) ss += e * e;
  return std::sqrt(ss);
}

// W [R, C]; mode 0 BigGAN's order (v = normalize(u W), u = normalize(W v)), 1 torch's, 2 s
// from the stored vectors; u_out [R], v_out [C], s = u^T W v.
template <typename T, typename A>
void power_cpu(const T* W, int64_t R, int64_t C, const A* u_in, const A* v_in, int iters, A eps,
               int mode, A* u_out, A* v_out, A* s) {
  std::vector<A> ur(R), vr(C);
  auto row_pass = [&](const A* x) {  // ur = W x
    for (int64_t r = 0; r < R; ++r) {
      A acc = 0;
      for (int64_t c = 0; c < C; ++c) acc += static_cast<A>(W[r * C + c]) * x[c];
      ur[r] = acc;
    }
  };
  auto col_pass = [&](const A* x) {  // vr = x^T W
    std::fill(vr.begin(), vr.end(), A(0));
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < C; ++c) vr[c] += x[r] * static_cast<A>(W[r * C + c]);
  };
  // out = raw / max(|raw|, eps); returns |raw|^2 / max(|raw|, eps).
  auto normalize_into = [&](const std::vector<A>& raw, A* out) {
    const A n = norm_of(raw), d = std::max(n, eps);
    for (size_t i = 0; i < raw.size(); ++i) out[i] = raw[i] / d;
    return n * n / d;
  };
  if (mode == 2) {
    row_pass(v_in);
    A d = 0;
    for (int64_t r = 0; r < R; ++r) d += u_in[r] * ur[r];
    *s = d;
    std::copy(u_in, u_in + R, u_out);
    std::copy(v_in, v_in + C, v_out);
    return;
  }
  const A* cu = u_in;
  const A* cv = v_in;
  for (int it = 0; it < iters; ++it) {
    // The second vector's |raw|^2 / max(|raw|, eps) is s = u^T W v.
    if (mode == 0) {
      col_pass(cu);
      normalize_into(vr, v_out);
      row_pass(v_out);
      *s = normalize_into(ur, u_out);
    } else {
      row_pass(cv);
      normalize_into(ur, u_out);
      col_pass(u_out);
      *s = normalize_into(vr, v_out);
    }
    cu = u_out;
    cv = v_out;
  }
}

}  // namespace sgan_fast
