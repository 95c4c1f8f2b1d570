// ctest: the CPU kernels of torch.ops.stdiff.* (called through the dispatcher, as Python does)
// against naive double-precision loops, for NCHW and channels_last inputs and odd sizes.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

#include "../cpu/kernels.h"
#include "../philox.h"

namespace {

using at::Tensor;
int failures = 0;

void expect_close(const std::string& what, const Tensor& got, const std::vector<double>& want, double tol) {
  const Tensor g = got.to(at::kDouble).contiguous();
  const double* p = g.const_data_ptr<double>();
  double worst = 0.0;
  if (static_cast<size_t>(g.numel()) != want.size()) {
    std::printf("FAIL %s: %lld elements, expected %zu\n", what.c_str(), static_cast<long long>(g.numel()), want.size());
    ++failures;
    return;
  }
  for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(p[i] - want[i]) / (1.0 + std::abs(want[i])));
  const bool ok = worst <= tol;
  std::printf("%s %-40s max rel err %.3e\n", ok ? "ok  " : "FAIL", what.c_str(), worst);
  failures += ok ? 0 : 1;
}

std::vector<double> values(const Tensor& t) {
  const Tensor d = t.to(at::kDouble).contiguous();
  return std::vector<double>(d.const_data_ptr<double>(), d.const_data_ptr<double>() + d.numel());
}

c10::OperatorHandle op(const char* name) { return c10::Dispatcher::singleton().findSchemaOrThrow(name, ""); }

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

void test_gates(int64_t n, int64_t f, int64_t h, int64_t w, bool channels_last) {
  const auto fmt = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const Tensor gx = at::randn({n, 2 * f, h, w}).contiguous(fmt), gh = at::randn({n, 2 * f, h, w}).contiguous(fmt);
  const Tensor hs = at::randn({n, f, h, w}).contiguous(fmt);
  const auto [u, rh] = op("stdiff::convgru_gates").typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&)>().call(gx, gh, hs);
  const auto X = values(gx), H = values(gh), S = values(hs);
  std::vector<double> wu, wr;
  const int64_t hw = h * w;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < f; ++c)
      for (int64_t p = 0; p < hw; ++p) {
        const int64_t zu = (i * 2 * f + c) * hw + p, zr = (i * 2 * f + f + c) * hw + p;
        wu.push_back(sigmoid(X[zu] + H[zu]));
        wr.push_back(sigmoid(X[zr] + H[zr]) * S[(i * f + c) * hw + p]);
      }
  const std::string tag = " " + std::to_string(n) + "x" + std::to_string(f) + "x" + std::to_string(h) + "x" +
                          std::to_string(w) + (channels_last ? " NHWC" : " NCHW");
  expect_close("convgru_gates u" + tag, u, wu, 1e-6);
  expect_close("convgru_gates rh" + tag, rh, wr, 1e-6);
}

void test_update(bool standard) {
  const Tensor cx = at::randn({3, 5, 7, 3}), ch = at::randn({3, 5, 7, 3}), u = at::rand({3, 5, 7, 3}),
               h = at::randn({3, 5, 7, 3});
  const Tensor out = op("stdiff::convgru_update")
                         .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool)>()
                         .call(cx, ch, u, h, standard);
  const auto X = values(cx), H = values(ch), U = values(u), S = values(h);
  std::vector<double> want;
  for (size_t i = 0; i < X.size(); ++i) {
    const double c = std::tanh(X[i] + H[i]);
    want.push_back((1 - U[i]) * S[i] + (standard ? U[i] * c : c));
  }
  expect_close(std::string("convgru_update standard=") + (standard ? "1" : "0"), out, want, 1e-6);
}

void test_spade(int64_t n, int64_t c, int64_t h, int64_t w, bool channels_last) {
  const auto fmt = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const Tensor x = (at::randn({n, c, h, w}) * 3 + 1).contiguous(fmt);
  const Tensor gamma = at::randn({n, c, h, w}).contiguous(fmt), beta = at::randn({n, c, h, w}).contiguous(fmt);
  const Tensor bias = at::randn({n, c});
  const double eps = 1e-5;
  const Tensor out = op("stdiff::spade_norm")
                         .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, const std::optional<Tensor>&, double)>()
                         .call(x, gamma, beta, bias, eps);
  const Tensor grad = at::randn({n, c, h, w});
  const auto grads = op("stdiff::spade_norm_backward")
                         .typed<std::vector<Tensor>(const Tensor&, const Tensor&, const Tensor&, double, std::array<bool, 3>)>()
                         .call(grad, x, gamma, eps, {true, true, true});
  const Tensor &dx = grads.at(0), &dgamma = grads.at(1), &dbias = grads.at(2);
  const auto X = values(x), G = values(gamma), B = values(beta), BI = values(bias), DY = values(grad);
  std::vector<double> want(X.size()), want_dx(X.size()), want_dg(X.size()), want_db(n * c);
  const int64_t hw = h * w;
  for (int64_t r = 0; r < n * c; ++r) {
    double mean = 0, var = 0;
    for (int64_t p = 0; p < hw; ++p) mean += X[r * hw + p] / hw;
    for (int64_t p = 0; p < hw; ++p) var += (X[r * hw + p] - mean) * (X[r * hw + p] - mean) / hw;
    const double rstd = 1 / std::sqrt(var + eps);
    double sg = 0, sgx = 0, sdy = 0;
    for (int64_t p = 0; p < hw; ++p) {
      const int64_t i = r * hw + p;
      const double xh = (X[i] - mean) * rstd, g = DY[i] * (1 + G[i]);
      want[i] = xh * (1 + G[i]) + B[i] + BI[r];
      want_dg[i] = DY[i] * xh;
      sg += g, sgx += g * xh, sdy += DY[i];
    }
    for (int64_t p = 0; p < hw; ++p) {
      const int64_t i = r * hw + p;
      const double xh = (X[i] - mean) * rstd, g = DY[i] * (1 + G[i]);
      want_dx[i] = rstd * (g - sg / hw - xh * sgx / hw);
    }
    want_db[r] = sdy;
  }
  const std::string tag = " " + std::to_string(n) + "x" + std::to_string(c) + "x" + std::to_string(h) + "x" +
                          std::to_string(w) + (channels_last ? " NHWC" : " NCHW");
  expect_close("spade_norm" + tag, out, want, 2e-5);
  expect_close("spade_norm grad_h" + tag, dx, want_dx, 2e-4);
  expect_close("spade_norm grad_gamma" + tag, dgamma, want_dg, 2e-5);
  expect_close("spade_norm grad_bias" + tag, dbias, want_db, 2e-5);
}

void test_sde() {
  const int64_t n = 1001;
  const Tensor y = at::randn({n}), f = at::randn({n}), g = at::randn({n}), gp = at::randn({n}), dw = at::randn({n});
  const double dt = 0.1;
  const Tensor step = op("stdiff::sde_step")
                          .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, const std::optional<Tensor>&, double,
                                        const std::optional<Tensor>&, bool, std::optional<int64_t>, int64_t)>()
                          .call(y, f, g, dw, dt, gp, true, std::nullopt, 0);
  const auto Y = values(y), F = values(f), G = values(g), GP = values(gp), W = values(dw);
  std::vector<double> want;
  for (int64_t i = 0; i < n; ++i) want.push_back(Y[i] + F[i] * dt + 0.5 * (std::tanh(G[i]) + std::tanh(GP[i])) * W[i]);
  expect_close("sde_step heun raw", step, want, 1e-6);

  // in-op noise: element i is sqrt(dt) * philox::normal_at(seed, offset, i)
  const Tensor pred = op("stdiff::sde_predict")
                          .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, std::optional<double>,
                                        bool, std::optional<int64_t>, int64_t)>()
                          .call(at::zeros({n}), at::ones({n}), std::nullopt, 0.25, false, 42, 7);
  std::vector<double> noise;
  for (int64_t i = 0; i < n; ++i) noise.push_back(0.5 * stdiff::philox::normal_at(42, 7, static_cast<uint64_t>(i)));
  expect_close("sde_predict philox noise", pred, noise, 0.0);

  const auto backward = op("stdiff::sde_step_backward")
                           .typed<std::vector<Tensor>(const Tensor&, const Tensor&, const std::optional<Tensor>&, double,
                                                      const std::optional<Tensor>&, bool, std::optional<int64_t>, int64_t,
                                                      std::array<bool, 4>)>();
  const auto grads = backward.call(at::ones({n}), g, dw, dt, std::nullopt, false, std::nullopt, 0, {true, true, true, true});
  expect_close("sde_step_backward grad_f", grads.at(0), std::vector<double>(n, dt), 1e-7);
  expect_close("sde_step_backward grad_g", grads.at(1), W, 1e-7);
  expect_close("sde_step_backward grad_dW", grads.at(2), G, 1e-7);
  // output_mask: only the gradients asked for are computed and returned
  const auto only_g = backward.call(at::ones({n}), g, dw, dt, std::nullopt, false, std::nullopt, 0, {false, true, false, false});
  if (only_g.size() != 1) {
    std::printf("FAIL sde_step_backward output_mask: %zu gradients returned, expected 1\n", only_g.size());
    ++failures;
  }
  expect_close("sde_step_backward masked grad_g", only_g.at(0), W, 1e-7);
}

}  // namespace

int main() {
  at::manual_seed(0);
  std::printf("CPU kernels: %s\n", stdiff::cpu::best_kernels().isa);
  test_gates(2, 3, 5, 7, false);
  test_gates(2, 3, 5, 7, true);
  test_gates(1, 16, 16, 16, false);
  test_update(false);
  test_update(true);
  for (const bool cl : {false, true}) {
    test_spade(2, 3, 1, 1, cl);
    test_spade(3, 5, 7, 9, cl);
    test_spade(1, 70, 8, 8, cl);
    test_spade(1, 2, 128, 128, cl);
  }
  test_sde();
  std::printf("%s: %d failure(s)\n", failures == 0 ? "PASSED" : "FAILED", failures);
  return failures == 0 ? 0 : 1;
}
