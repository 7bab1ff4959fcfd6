#pragma once
/// gla/detail/recurrent_common.hpp: the pieces fused_recurrent_gla and the reference recurrence (naive.hpp)
/// share: the checks of the recurrent extras (gamma, state clamps), the scale and the order of time steps.

#include <gla/core.hpp>

namespace gla::detail {

/// The extra per-step decay of head h (fused_recurrent_gla's `gamma`): 1 when unset.
template <class Acc>
Acc gamma_for_head(const std::vector<float>& gamma, Index h) {
  if (gamma.empty()) return Acc(1);
  return static_cast<Acc>(gamma.size() == 1 ? gamma[0] : gamma[static_cast<std::size_t>(h)]);
}

/// Checks the fused_recurrent extras: gamma has 0, 1 or H finite values; clamp bounds are numbers, min <= max.
inline void check_state_extras(const std::string& fn, const GLAOptions& opts, Index H) {
  if (!opts.gamma.empty() && opts.gamma.size() != 1 && static_cast<Index>(opts.gamma.size()) != H)
    fail(fn, "gamma has " + std::to_string(opts.gamma.size()) + " values, expected 1 or H = " + std::to_string(H));
  for (float gm : opts.gamma)
    if (!std::isfinite(gm)) fail(fn, "gamma holds " + std::to_string(gm) + ", expected finite values");
  if (opts.state_clamp_min && std::isnan(*opts.state_clamp_min)) fail(fn, "state_clamp_min is NaN, expected a number");
  if (opts.state_clamp_max && std::isnan(*opts.state_clamp_max)) fail(fn, "state_clamp_max is NaN, expected a number");
  if (opts.state_clamp_min && opts.state_clamp_max && *opts.state_clamp_min > *opts.state_clamp_max)
    fail(fn, "state_clamp_min is " + std::to_string(*opts.state_clamp_min) +
                 ", expected <= state_clamp_max = " + std::to_string(*opts.state_clamp_max));
}

/// The backward passes differentiate fla's recurrence only: gamma and the state clamps are inference extras
/// (gamma is an option, not a tensor, so it has no gradient output; a clamp makes the recurrence
/// non-differentiable at its bounds; fla has neither, so there is nothing to match).
inline void reject_forward_only_extras(const std::string& fn, const GLAOptions& opts) {
  if (!opts.gamma.empty())
    fail(fn, "gamma is set, expected it empty: gamma is a forward-only extra (no gradient is defined for it)");
  if (opts.state_clamp_min || opts.state_clamp_max)
    fail(fn,
         std::string(opts.state_clamp_min ? "state_clamp_min" : "state_clamp_max") +
             " is set, expected unset: the state clamps are forward-only extras (not differentiable at the bounds)");
}

/// The scale of the operators: opts.scale when given (an explicit 0 is kept), else 1/sqrt(K).
template <class Acc>
Acc recurrent_scale(const GLAOptions& opts, Index K) {
  return opts.scale ? static_cast<Acc>(*opts.scale) : Acc(1) / std::sqrt(static_cast<Acc>(K));
}

/// The time index of the i-th processed token of a sequence (reverse runs t = t0+len-1 … t0).
inline Index recurrent_step_time(const Seq& sq, Index i, bool reverse) {
  return sq.t0 + (reverse ? sq.len - 1 - i : i);
}

}  // namespace gla::detail
