// Autograd of the stdiff::* forward ops, in C++ (one dispatcher hop, no Python per call): each
// forward saves its inputs and the backward calls the matching stdiff::*_backward op, which
// recomputes what it needs (sigmoid/tanh, SPADE statistics, the Philox noise). Registered for
// the Autograd alias key, so it serves CPU and CUDA tensors alike; torch.compile traces through it
// (AOTAutograd records the forward and backward ops; fake impls come from Python).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

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

std::optional<Tensor> defined_or_none(const Tensor& t) {
  return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
}

// ------------------------------------------------------------------ convgru_gates
using GatesSig = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&);
using GatesBwdSig = std::tuple<Tensor, Tensor>(const std::optional<Tensor>&, const std::optional<Tensor>&,
                                               const Tensor&, const Tensor&, const Tensor&, const Tensor&);

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
    if (!grads[0].defined() && !grads[1].defined()) return {Tensor(), Tensor(), Tensor()};
    const auto saved = ctx->get_saved_variables();
    auto [grad_g, grad_h] =
        op.call(defined_or_none(grads[0]), defined_or_none(grads[1]), saved[3], saved[0], saved[1], saved[2]);
    return {grad_g, grad_g, grad_h};
  }
};

std::tuple<Tensor, Tensor> convgru_gates(const Tensor& gx, const Tensor& gh, const Tensor& h) {
  const variable_list out = GatesFunction::apply(gx, gh, h);
  return {out[0], out[1]};
}

// ------------------------------------------------------------------ convgru_update
using UpdateSig = Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool);
using UpdateBwdSig = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                        const Tensor&, bool);

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
    const auto s = ctx->get_saved_variables();
    auto [grad_c, grad_u, grad_h] = op.call(grads[0], s[0], s[1], s[2], s[3], ctx->saved_data["standard"].toBool());
    return {grad_c, grad_c, grad_u, grad_h, Tensor()};
  }
};

Tensor convgru_update(const Tensor& cx, const Tensor& ch, const Tensor& u, const Tensor& h, bool standard) {
  return UpdateFunction::apply(cx, ch, u, h, standard);
}

// ------------------------------------------------------------------ spade_norm
using SpadeSig = Tensor(const Tensor&, const Tensor&, const Tensor&, const std::optional<Tensor>&, double);
using SpadeBwdSig = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, double);

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
    auto [grad_h, grad_gamma, grad_bias] = op.call(grads[0], s[0], s[1], ctx->saved_data["eps"].toDouble());
    return {grad_h, grad_gamma, grads[0], ctx->saved_data["has_bias"].toBool() ? grad_bias : Tensor(), Tensor()};
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
                                       const std::optional<Tensor>&, bool, std::optional<int64_t>, int64_t);
using PredictSig = Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, std::optional<double>, bool,
                          std::optional<int64_t>, int64_t);
using PredictBwdSig = std::vector<Tensor>(const Tensor&, const Tensor&, const std::optional<Tensor>&,
                                          std::optional<double>, bool, std::optional<int64_t>, int64_t);

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
    const bool has_dw = s[1].defined(), has_gp = s[2].defined();
    const std::vector<Tensor> g = op.call(grads[0], s[0], defined_or_none(s[1]), ctx->saved_data["dt"].toDouble(),
                                          defined_or_none(s[2]), ctx->saved_data["raw"].toBool(), saved_seed(ctx),
                                          ctx->saved_data["offset"].toInt());
    // g = [grad_f, grad_g, grad_g_pred if g_pred, grad_dW if dW]
    const Tensor grad_gp = has_gp ? g[2] : Tensor();
    const Tensor grad_dw = has_dw ? g[has_gp ? 3 : 2] : Tensor();
    return {grads[0], g[0], g[1], grad_dw, Tensor(), grad_gp, Tensor(), Tensor(), Tensor()};
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
    const std::vector<Tensor> g =
        op.call(grads[0], s[0], defined_or_none(s[1]), dt.isNone() ? std::nullopt : std::optional<double>(dt.toDouble()),
                ctx->saved_data["raw"].toBool(), saved_seed(ctx), ctx->saved_data["offset"].toInt());
    // g = [grad_g, grad_dW if dW]
    return {grads[0], g[0], s[1].defined() ? g[1] : Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
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
