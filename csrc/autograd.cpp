// Autograd of the stdiff::* forward ops, in C++ (one dispatcher hop, no Python per call): each
// forward saves its inputs and the backward calls the matching stdiff::*_backward op with the
// output mask of the inputs that need a gradient; the op recomputes what it needs (sigmoid/tanh,
// SPADE statistics, the Philox noise). Registered for the Autograd alias key, so it serves CPU and
// CUDA tensors alike; torch.compile traces through it (AOTAutograd records the forward and
// backward ops; fake impls come from Python). A backward recorded for higher derivatives
// (create_graph=True) dispatches the backward op through its own autograd, registered from Python
// (stdiff/ops/backward.py); a first-order backward calls the kernels directly.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

namespace stdiff {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <typename Sig>
c10::TypedOperatorHandle<Sig> handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// Calls a backward op: straight to the kernels in a first-order backward (grad mode off), through
// the backward op's autograd when the backward itself is recorded (create_graph=True).
template <typename Sig, typename... Args>
auto call_backward(const c10::TypedOperatorHandle<Sig>& op, const Args&... args) {
  if (at::GradMode::is_enabled()) return op.call(args...);
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(args...);
}

// The next requested gradient of `grads` (a backward op's output: the requested ones, in order),
// or an undefined tensor when `needed` is false.
Tensor take(const std::vector<Tensor>& grads, size_t& next, bool needed) {
  return needed ? grads[next++] : Tensor();
}

std::optional<Tensor> defined_or_none(const Tensor& t) {
  return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
}

// ------------------------------------------------------------------ convgru_gates
using GatesSig = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&);
using GatesBwdSig = std::vector<Tensor>(const std::optional<Tensor>&, const std::optional<Tensor>&, const Tensor&,
                                        const Tensor&, const Tensor&, const Tensor&, std::array<bool, 2>);

struct GatesFunction : torch::autograd::Function<GatesFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& gx, const Tensor& gh, const Tensor& h) {
    static const auto op = handle<GatesSig>("stdiff::convgru_gates");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);
    auto [u, rh] = op.call(gx, gh, h);
    ctx->save_for_backward({gx, gh, h, u});
    return {u, rh};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = handle<GatesBwdSig>("stdiff::convgru_gates_backward");
    // mask: (grad_g, the gradient of gx and of gh; grad_h)
    const std::array<bool, 2> mask{ctx->needs_input_grad(0) || ctx->needs_input_grad(1), ctx->needs_input_grad(2)};
    if ((!grads[0].defined() && !grads[1].defined()) || !(mask[0] || mask[1])) return {Tensor(), Tensor(), Tensor()};
    const auto saved = ctx->get_saved_variables();
    const std::vector<Tensor> g = call_backward(op, defined_or_none(grads[0]), defined_or_none(grads[1]), saved[3],
                                                saved[0], saved[1], saved[2], mask);
    size_t next = 0;
    const Tensor grad_g = take(g, next, mask[0]), grad_h = take(g, next, mask[1]);
    return {ctx->needs_input_grad(0) ? grad_g : Tensor(), ctx->needs_input_grad(1) ? grad_g : Tensor(), grad_h};
  }
};

std::tuple<Tensor, Tensor> convgru_gates(const Tensor& gx, const Tensor& gh, const Tensor& h) {
  const variable_list out = GatesFunction::apply(gx, gh, h);
  return {out[0], out[1]};
}

// ------------------------------------------------------------------ convgru_update
using UpdateSig = Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool);
using UpdateBwdSig = std::vector<Tensor>(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                         bool, std::array<bool, 3>);

struct UpdateFunction : torch::autograd::Function<UpdateFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& cx, const Tensor& ch, const Tensor& u, const Tensor& h,
                        bool standard) {
    static const auto op = handle<UpdateSig>("stdiff::convgru_update");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({cx, ch, u, h});
    ctx->saved_data["standard"] = standard;
    return op.call(cx, ch, u, h, standard);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = handle<UpdateBwdSig>("stdiff::convgru_update_backward");
    // mask: (grad_c, the gradient of cx and of ch; grad_u; grad_h)
    const std::array<bool, 3> mask{ctx->needs_input_grad(0) || ctx->needs_input_grad(1), ctx->needs_input_grad(2),
                                   ctx->needs_input_grad(3)};
    if (!(mask[0] || mask[1] || mask[2])) return {Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    const auto s = ctx->get_saved_variables();
    const std::vector<Tensor> g =
        call_backward(op, grads[0], s[0], s[1], s[2], s[3], ctx->saved_data["standard"].toBool(), mask);
    size_t next = 0;
    const Tensor grad_c = take(g, next, mask[0]), grad_u = take(g, next, mask[1]), grad_h = take(g, next, mask[2]);
    return {ctx->needs_input_grad(0) ? grad_c : Tensor(), ctx->needs_input_grad(1) ? grad_c : Tensor(), grad_u,
            grad_h, Tensor()};
  }
};

Tensor convgru_update(const Tensor& cx, const Tensor& ch, const Tensor& u, const Tensor& h, bool standard) {
  return UpdateFunction::apply(cx, ch, u, h, standard);
}

// ------------------------------------------------------------------ spade_norm
using SpadeSig = Tensor(const Tensor&, const Tensor&, const Tensor&, const std::optional<Tensor>&, double);
using SpadeBwdSig = std::vector<Tensor>(const Tensor&, const Tensor&, const Tensor&, double, std::array<bool, 3>);

struct SpadeFunction : torch::autograd::Function<SpadeFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& h, const Tensor& gamma, const Tensor& beta,
                        const std::optional<Tensor>& bias, double eps) {
    static const auto op = handle<SpadeSig>("stdiff::spade_norm");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({h, gamma});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return op.call(h, gamma, beta, bias, eps);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = handle<SpadeBwdSig>("stdiff::spade_norm_backward");
    const auto s = ctx->get_saved_variables();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    // needs_input_grad counts the tensors given (h, gamma, beta, bias when present)
    const std::array<bool, 3> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                   has_bias && ctx->needs_input_grad(3)};
    std::vector<Tensor> g;
    if (mask[0] || mask[1] || mask[2])
      g = call_backward(op, grads[0], s[0], s[1], ctx->saved_data["eps"].toDouble(), mask);
    size_t next = 0;
    const Tensor grad_h = take(g, next, mask[0]), grad_gamma = take(g, next, mask[1]);
    const Tensor grad_bias = take(g, next, mask[2]);
    return {grad_h, grad_gamma, ctx->needs_input_grad(2) ? grads[0] : Tensor(), grad_bias, Tensor()};
  }
};

Tensor spade_norm(const Tensor& h, const Tensor& gamma, const Tensor& beta, const std::optional<Tensor>& bias,
                  double eps) {
  return SpadeFunction::apply(h, gamma, beta, bias, eps);
}

// ------------------------------------------------------------------ sde_step / sde_predict
using StepSig = Tensor(const Tensor&, const Tensor&, const Tensor&, const std::optional<Tensor>&, double,
                       const std::optional<Tensor>&, bool, std::optional<int64_t>, int64_t);
using StepBwdSig = std::vector<Tensor>(const Tensor&, const Tensor&, const std::optional<Tensor>&, double,
                                       const std::optional<Tensor>&, bool, std::optional<int64_t>, int64_t,
                                       std::array<bool, 4>);
using PredictSig = Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, std::optional<double>, bool,
                          std::optional<int64_t>, int64_t);
using PredictBwdSig = std::vector<Tensor>(const Tensor&, const Tensor&, const std::optional<Tensor>&,
                                          std::optional<double>, bool, std::optional<int64_t>, int64_t,
                                          std::array<bool, 2>);

void save_noise_args(AutogradContext* ctx, bool raw, std::optional<int64_t> seed, int64_t offset) {
  ctx->saved_data["raw"] = raw;
  ctx->saved_data["seed"] = seed.has_value() ? c10::IValue(*seed) : c10::IValue();
  ctx->saved_data["offset"] = offset;
}

std::optional<int64_t> saved_seed(AutogradContext* ctx) {
  const c10::IValue& v = ctx->saved_data["seed"];
  return v.isNone() ? std::nullopt : std::optional<int64_t>(v.toInt());
}

struct StepFunction : torch::autograd::Function<StepFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& y, const Tensor& f, const Tensor& g,
                        const std::optional<Tensor>& dw, double dt, const std::optional<Tensor>& g_pred, bool raw,
                        std::optional<int64_t> seed, int64_t offset) {
    static const auto op = handle<StepSig>("stdiff::sde_step");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({g, dw.value_or(Tensor()), g_pred.value_or(Tensor())});
    ctx->saved_data["dt"] = dt;
    save_noise_args(ctx, raw, seed, offset);
    return op.call(y, f, g, dw, dt, g_pred, raw, seed, offset);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = handle<StepBwdSig>("stdiff::sde_step_backward");
    const auto s = ctx->get_saved_variables();
    // needs_input_grad counts the tensors given: y, f, g, then dW and g_pred when present.
    // mask: (grad_f, grad_g, grad_g_pred, grad_dW)
    const bool has_dw = s[1].defined();
    const std::array<bool, 4> mask{ctx->needs_input_grad(1), ctx->needs_input_grad(2),
                                   s[2].defined() && ctx->needs_input_grad(has_dw ? 4 : 3),
                                   has_dw && ctx->needs_input_grad(3)};
    std::vector<Tensor> g;
    if (mask[0] || mask[1] || mask[2] || mask[3])
      g = call_backward(op, grads[0], s[0], defined_or_none(s[1]), ctx->saved_data["dt"].toDouble(),
                        defined_or_none(s[2]), ctx->saved_data["raw"].toBool(), saved_seed(ctx),
                        ctx->saved_data["offset"].toInt(), mask);
    size_t next = 0;
    const Tensor grad_f = take(g, next, mask[0]), grad_g = take(g, next, mask[1]);
    const Tensor grad_gp = take(g, next, mask[2]), grad_dw = take(g, next, mask[3]);
    return {ctx->needs_input_grad(0) ? grads[0] : Tensor(), grad_f, grad_g, grad_dw, Tensor(), grad_gp,
            Tensor(), Tensor(), Tensor()};
  }
};

Tensor sde_step(const Tensor& y, const Tensor& f, const Tensor& g, const std::optional<Tensor>& dw, double dt,
                const std::optional<Tensor>& g_pred, bool raw, std::optional<int64_t> seed, int64_t offset) {
  return StepFunction::apply(y, f, g, dw, dt, g_pred, raw, seed, offset);
}

struct PredictFunction : torch::autograd::Function<PredictFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& y, const Tensor& g, const std::optional<Tensor>& dw,
                        std::optional<double> dt, bool raw, std::optional<int64_t> seed, int64_t offset) {
    static const auto op = handle<PredictSig>("stdiff::sde_predict");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({g, dw.value_or(Tensor())});
    ctx->saved_data["dt"] = dt.has_value() ? c10::IValue(*dt) : c10::IValue();
    save_noise_args(ctx, raw, seed, offset);
    return op.call(y, g, dw, dt, raw, seed, offset);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = handle<PredictBwdSig>("stdiff::sde_predict_backward");
    const auto s = ctx->get_saved_variables();
    const c10::IValue& dt = ctx->saved_data["dt"];
    // needs_input_grad counts the tensors given (y, g, dW when present): mask (grad_g, grad_dW)
    const std::array<bool, 2> mask{ctx->needs_input_grad(1), s[1].defined() && ctx->needs_input_grad(2)};
    std::vector<Tensor> g;
    if (mask[0] || mask[1])
      g = call_backward(op, grads[0], s[0], defined_or_none(s[1]),
                        dt.isNone() ? std::nullopt : std::optional<double>(dt.toDouble()),
                        ctx->saved_data["raw"].toBool(), saved_seed(ctx), ctx->saved_data["offset"].toInt(), mask);
    size_t next = 0;
    const Tensor grad_g = take(g, next, mask[0]), grad_dw = take(g, next, mask[1]);
    return {ctx->needs_input_grad(0) ? grads[0] : Tensor(), grad_g, grad_dw, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensor sde_predict(const Tensor& y, const Tensor& g, const std::optional<Tensor>& dw, std::optional<double> dt,
                   bool raw, std::optional<int64_t> seed, int64_t offset) {
  return PredictFunction::apply(y, g, dw, dt, raw, seed, offset);
}

}  // namespace
}  // namespace stdiff

TORCH_LIBRARY_IMPL(stdiff, Autograd, m) {
  m.impl("convgru_gates", &stdiff::convgru_gates);
  m.impl("convgru_update", &stdiff::convgru_update);
  m.impl("spade_norm", &stdiff::spade_norm);
  m.impl("sde_step", &stdiff::sde_step);
  m.impl("sde_predict", &stdiff::sde_predict);
}
