// Storage element type of activations and weights: DT is f16 when the variant defines F16, else f32.
// Arithmetic is always f32: read with f32(x[i]), write with DT(v). Include this first (it may emit `enable f16;`).
#ifdef F16
enable f16;
alias DT = f16;
#else
alias DT = f32;
#endif
