// custom_relu: y = max(x, 0), with its gradient, as a Paddle custom C++ operator (CPU).
#include <vector>

#include "paddle/extension.h"

template <typename data_t>
void relu_forward_kernel(const data_t* x, data_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    y[i] = x[i] > static_cast<data_t>(0) ? x[i] : static_cast<data_t>(0);
  }
}

template <typename data_t>
void relu_backward_kernel(const data_t* y, const data_t* grad_y, data_t* grad_x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    grad_x[i] = y[i] > static_cast<data_t>(0) ? grad_y[i] : static_cast<data_t>(0);
  }
}

std::vector<paddle::Tensor> ReluForward(const paddle::Tensor& x) {
  PD_CHECK(x.place() == paddle::PlaceType::kCPU, "custom_relu: x must be a CPU tensor");
  auto y = paddle::empty_like(x);
  PD_DISPATCH_FLOATING_TYPES(x.type(), "relu_forward_kernel", ([&] {
    relu_forward_kernel<data_t>(x.data<data_t>(), y.data<data_t>(), x.numel());
  }));
  return {y};
}

std::vector<paddle::Tensor> ReluBackward(const paddle::Tensor& x, const paddle::Tensor& y,
                                         const paddle::Tensor& grad_y) {
  PD_CHECK(y.place() == paddle::PlaceType::kCPU, "custom_relu: y must be a CPU tensor");
  auto grad_x = paddle::empty_like(x);
  PD_DISPATCH_FLOATING_TYPES(y.type(), "relu_backward_kernel", ([&] {
    relu_backward_kernel<data_t>(y.data<data_t>(), grad_y.data<data_t>(), grad_x.data<data_t>(), y.numel());
  }));
  return {grad_x};
}

PD_BUILD_OP(custom_relu)
    .Inputs({"X"})
    .Outputs({"Out"})
    .SetKernelFn(PD_KERNEL(ReluForward));

PD_BUILD_GRAD_OP(custom_relu)
    .Inputs({"X", "Out", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .SetKernelFn(PD_KERNEL(ReluBackward));
