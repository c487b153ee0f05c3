// Scalar activations shared by the GEMM epilogues and the elementwise kernels. All in f32.

fn sigmoid_f(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

fn silu_f(x: f32) -> f32 {
    return x * sigmoid_f(x);
}

fn quick_gelu_f(x: f32) -> f32 {
    return x * sigmoid_f(1.702 * x);
}

// erf(x) from the Chebyshev-fitted erfc of Numerical Recipes (fractional error below 1.2e-7), enough for f32 GELU.
fn erf_f(x: f32) -> f32 {
    let ax = abs(x);
    let t = 1.0 / (1.0 + 0.5 * ax);
    let y = t * exp(-ax * ax - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277)))))))));
    let r = 1.0 - y;
    return select(-r, r, x >= 0.0);
}

// Exact (erf) GELU, as torch.nn.functional.gelu with approximate="none".
fn gelu_f(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_f(x * 0.70710678118654752));
}

// The tanh approximation, as torch's approximate="tanh".
fn gelu_tanh_f(x: f32) -> f32 {
    return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}

// act: 0 none, 1 silu, 2 gelu, 3 gelu_tanh, 4 quick_gelu.
fn activate(x: f32, act: u32) -> f32 {
    switch act {
        case 1u: { return silu_f(x); }
        case 2u: { return gelu_f(x); }
        case 3u: { return gelu_tanh_f(x); }
        case 4u: { return quick_gelu_f(x); }
        default: { return x; }
    }
}
