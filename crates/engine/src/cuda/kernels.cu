// superres device kernels: every operator but the convolution products (cuDNN's).
//
// Self-contained: no CUDA headers (NVRTC compiles this as is on any machine). Storage
// types: float, and 16-bit halves (f16, bf16) kept as `unsigned short` with their own
// conversions, so no cuda_fp16.h is needed. Arithmetic is always float. Compiled with
// --fmad=false: every multiply and add rounds like the CPU backend's, in the IR's order.
//
// Layout: NHWC, `n` images back to back, channels innermost with a storage stride `cs`
// (channel counts padded for tensor cores); only the first `c` channels are values, the
// padding is written as zeros by every kernel so it can never carry a NaN into a product.
// Every kernel is a grid-stride loop over the elements it writes.

typedef unsigned short u16;
typedef unsigned char u8;

__device__ __forceinline__ float ld(const float* p, long i) { return p[i]; }
__device__ __forceinline__ void st(float* p, long i, float v) { p[i] = v; }

struct f16 { u16 bits; };
struct bf16 { u16 bits; };

#ifndef SUPERRES_HOST
__device__ __forceinline__ float ld(const f16* p, long i) {
    float r;
    asm("cvt.f32.f16 %0, %1;" : "=f"(r) : "h"(p[i].bits));
    return r;
}
__device__ __forceinline__ void st(f16* p, long i, float v) {
    u16 r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(v));
    p[i].bits = r;
}
#else
// The host build of the kernels (tests: a C++ compiler with a grid-emulating shim) converts
// with the compiler's own IEEE half type, round to nearest even like cvt.rn.
__device__ __forceinline__ float ld(const f16* p, long i) {
    _Float16 h;
    memcpy(&h, &p[i].bits, 2);
    return (float)h;
}
__device__ __forceinline__ void st(f16* p, long i, float v) {
    _Float16 h = (_Float16)v;
    memcpy(&p[i].bits, &h, 2);
}
#endif
__device__ __forceinline__ float ld(const bf16* p, long i) {
    return __uint_as_float(((unsigned int)p[i].bits) << 16);
}
__device__ __forceinline__ void st(bf16* p, long i, float v) {
    // Round to nearest even; NaN stays a quiet NaN.
    unsigned int u = __float_as_uint(v);
    u16 r;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        r = 0x7fc0;
    } else {
        u += 0x7fffu + ((u >> 16) & 1u);
        r = (u16)(u >> 16);
    }
    p[i].bits = r;
}

#define GRID_LOOP(i, total) \
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); \
         i += (long)blockDim.x * gridDim.x)

// Activation codes (dplan.rs, Act): 0 none, 1 relu, 2 leaky, 3 prelu, 4 tanh, 5 sigmoid,
// 6 clip, 7 abs, 8 neg.
__device__ __forceinline__ float activate(float x, int act, int ch, const float* alpha,
                                          int nalpha, float p0, float p1) {
    switch (act) {
    case 1: return x > 0.0f ? x : 0.0f;
    case 2: return x > 0.0f ? x : p0 * x;
    case 3: return x > 0.0f ? x : alpha[nalpha == 1 ? 0 : ch] * x;
    case 4: return tanhf(x);
    case 5: return 1.0f / (1.0f + expf(-x));
    case 6: return fminf(fmaxf(x, p0), p1);
    case 7: return fabsf(x);
    case 8: return -x;
    default: return x;
    }
}

// dst = skip + residual * act(src + bias), or its parts, over `npix` pixels of `cs` stored
// channels (`c` values). `src` may be `dst` (the usual case after a convolution).
#define POINTWISE(T, NAME)                                                                   \
extern "C" __global__ void NAME(T* dst, const T* src, long npix, int c, int cs,               \
                                const float* bias, int act, const float* alpha, int nalpha,   \
                                float p0, float p1, const T* skip, int skip_cs,               \
                                int has_residual, float residual) {                           \
    GRID_LOOP(i, npix * cs) {                                                                 \
        long px = i / cs;                                                                     \
        int ch = (int)(i - px * cs);                                                          \
        if (ch >= c) { st(dst, i, 0.0f); continue; }                                          \
        float y = ld(src, i);                                                                 \
        if (bias) y = y + bias[ch];                                                           \
        y = activate(y, act, ch, alpha, nalpha, p0, p1);                                      \
        if (has_residual) {                                                                   \
            float s = ld(skip, px * skip_cs + ch);                                            \
            y = residual == 1.0f ? s + y : s + residual * y;                                  \
        }                                                                                     \
        st(dst, i, y);                                                                        \
    }                                                                                         \
}

// dst = a op b; b is a tensor (mode 0), a per-channel constant (1) or a scalar (2).
// Ops: 0 add, 1 sub, 2 mul, 3 div.
#define BINARY(T, NAME)                                                                      \
extern "C" __global__ void NAME(T* dst, const T* a, long npix, int c, int cs, const T* b,    \
                                int b_cs, int mode, const float* bconst, float scalar,        \
                                int op) {                                                     \
    GRID_LOOP(i, npix * cs) {                                                                 \
        long px = i / cs;                                                                     \
        int ch = (int)(i - px * cs);                                                          \
        if (ch >= c) { st(dst, i, 0.0f); continue; }                                          \
        float x = ld(a, i);                                                                   \
        float y = mode == 0 ? ld(b, px * b_cs + ch) : (mode == 1 ? bconst[ch] : scalar);      \
        float r = op == 0 ? x + y : (op == 1 ? x - y : (op == 2 ? x * y : x / y));            \
        st(dst, i, r);                                                                        \
    }                                                                                         \
}

// Pixel shuffle: out[y*b+i, x*b+j, ch] = in[y, x, DCR ? (i*b+j)*oc+ch : ch*b*b+i*b+j].
#define DEPTH_TO_SPACE(T, NAME)                                                              \
extern "C" __global__ void NAME(T* dst, int dst_cs, const T* src, int src_cs, int n, int h,  \
                                int w, int oc, int b, int crd) {                              \
    long oh = (long)h * b, ow = (long)w * b;                                                  \
    GRID_LOOP(i, (long)n * oh * ow * dst_cs) {                                                \
        long px = i / dst_cs;                                                                 \
        int ch = (int)(i - px * dst_cs);                                                      \
        if (ch >= oc) { st(dst, i, 0.0f); continue; }                                         \
        long img = px / (oh * ow);                                                            \
        long rem = px - img * oh * ow;                                                        \
        long y = rem / ow, x = rem - (rem / ow) * ow;                                         \
        long sy = y / b, sx = x / b;                                                          \
        int bi = (int)(y - sy * b), bj = (int)(x - sx * b);                                   \
        int sc = crd ? ch * b * b + bi * b + bj : (bi * b + bj) * oc + ch;                    \
        st(dst, i, ld(src, ((img * h + sy) * w + sx) * src_cs + sc));                         \
    }                                                                                         \
}

// Upsampling: nearest (0) or bilinear with half-pixel centres, clamped (1), by an integer
// factor; or ncnn's bicubic (2) by `f / down`; all in the CPU's arithmetic.
__device__ __forceinline__ void coord(long o, int n, int f, int* i0, int* i1, float* t) {
    float s = ((float)o + 0.5f) / (float)f - 0.5f;
    s = fmaxf(s, 0.0f);
    int a = (int)floorf(s);
    if (a > n - 1) a = n - 1;
    *i0 = a;
    *i1 = a + 1 > n - 1 ? n - 1 : a + 1;
    *t = s - (float)a;
}

// Taps and weights of ncnn's bicubic (A = -0.75, the last weight 1 - the others), as
// `superres_graph::cubic_taps`.
__device__ __forceinline__ void cubic(long o, int n, int f, int down, int* tap, float* wt) {
    double scale = (double)down / (double)f;
    float fx = (float)(((double)o + 0.5) * scale - 0.5);
    float sx = floorf(fx);
    float t = fx - sx;
    const float A = -0.75f;
    float t0 = t + 1.0f, t1 = t, t2 = 1.0f - t;
    wt[0] = A * t0 * t0 * t0 - 5.0f * A * t0 * t0 + 8.0f * A * t0 - 4.0f * A;
    wt[1] = (A + 2.0f) * t1 * t1 * t1 - (A + 3.0f) * t1 * t1 + 1.0f;
    wt[2] = (A + 2.0f) * t2 * t2 * t2 - (A + 3.0f) * t2 * t2 + 1.0f;
    wt[3] = 1.0f - wt[0] - wt[1] - wt[2];
    int s = (int)sx;
    for (int k = 0; k < 4; k++) {
        int v = s - 1 + k;
        tap[k] = v < 0 ? 0 : (v > n - 1 ? n - 1 : v);
    }
}

#define RESIZE(T, NAME)                                                                      \
extern "C" __global__ void NAME(T* dst, int dst_cs, const T* src, int src_cs, int n, int h,  \
                                int w, int c, int f, int down, int mode) {                    \
    long oh = (long)h * f / down, ow = (long)w * f / down;                                    \
    GRID_LOOP(i, (long)n * oh * ow * dst_cs) {                                                \
        long px = i / dst_cs;                                                                 \
        int ch = (int)(i - px * dst_cs);                                                      \
        if (ch >= c) { st(dst, i, 0.0f); continue; }                                          \
        long img = px / (oh * ow);                                                            \
        long rem = px - img * oh * ow;                                                        \
        long y = rem / ow, x = rem - (rem / ow) * ow;                                         \
        const T* base = src + img * h * w * src_cs;                                           \
        if (mode == 0) {                                                                      \
            st(dst, i, ld(base, ((y / f) * w + x / f) * src_cs + ch));                        \
            continue;                                                                         \
        }                                                                                     \
        if (mode == 2) {                                                                      \
            int ys[4], xs[4];                                                                 \
            float wy[4], wx[4];                                                               \
            cubic(y, h, f, down, ys, wy);                                                     \
            cubic(x, w, f, down, xs, wx);                                                     \
            float acc = 0.0f;                                                                 \
            for (int j = 0; j < 4; j++) {                                                     \
                const T* r = base + (long)ys[j] * w * src_cs + ch;                            \
                float row = ld(r, (long)xs[0] * src_cs) * wx[0]                               \
                          + ld(r, (long)xs[1] * src_cs) * wx[1]                               \
                          + ld(r, (long)xs[2] * src_cs) * wx[2]                               \
                          + ld(r, (long)xs[3] * src_cs) * wx[3];                              \
                acc = j == 0 ? row * wy[0] : acc + row * wy[j];                               \
            }                                                                                 \
            st(dst, i, acc);                                                                  \
            continue;                                                                         \
        }                                                                                     \
        int y0, y1, x0, x1;                                                                   \
        float fy, fx;                                                                         \
        coord(y, h, f, &y0, &y1, &fy);                                                        \
        coord(x, w, f, &x0, &x1, &fx);                                                        \
        float a = ld(base, ((long)y0 * w + x0) * src_cs + ch);                                \
        float bb = ld(base, ((long)y0 * w + x1) * src_cs + ch);                               \
        float cc = ld(base, ((long)y1 * w + x0) * src_cs + ch);                               \
        float d = ld(base, ((long)y1 * w + x1) * src_cs + ch);                                \
        float top = a + (bb - a) * fx;                                                        \
        float bot = cc + (d - cc) * fx;                                                       \
        st(dst, i, top + (bot - top) * fy);                                                   \
    }                                                                                         \
}

// Copies `c` channels of `src` to channels [off, off + c) of `dst`; the part that ends the
// concatenation (`last`) also zeroes the padding after it.
#define CONCAT(T, NAME)                                                                      \
extern "C" __global__ void NAME(T* dst, int dst_cs, int off, int total, const T* src,        \
                                int src_cs, int c, long npix, int last) {                     \
    int span = last ? dst_cs - off : c;                                                       \
    GRID_LOOP(i, npix * span) {                                                               \
        long px = i / span;                                                                   \
        int ch = (int)(i - px * span);                                                        \
        float v = ch < c ? ld(src, px * src_cs + ch) : 0.0f;                                  \
        st(dst, px * dst_cs + off + ch, v);                                                   \
    }                                                                                         \
}

// Zero padding of a convolution's input where cuDNN's symmetric padding cannot express it:
// dst is (h + top + bottom) × (w + left + right).
#define PAD(T, NAME)                                                                         \
extern "C" __global__ void NAME(T* dst, const T* src, int cs, int n, int h, int w, int top,  \
                                int left, int ph, int pw) {                                   \
    GRID_LOOP(i, (long)n * ph * pw * cs) {                                                    \
        long px = i / cs;                                                                     \
        int ch = (int)(i - px * cs);                                                          \
        long img = px / ((long)ph * pw);                                                      \
        long rem = px - img * ph * pw;                                                        \
        int y = (int)(rem / pw) - top, x = (int)(rem - (rem / pw) * pw) - left;               \
        float v = (y >= 0 && y < h && x >= 0 && x < w)                                        \
                      ? ld(src, ((img * h + y) * w + x) * cs + ch) : 0.0f;                    \
        st(dst, i, v);                                                                        \
    }                                                                                         \
}

// Edge replication (a side > 0) or cropping (< 0): dst is oh × ow, pixel (y, x) the source
// pixel (y - top, x - left) clamped into h × w; the same stored channels (zero padding
// lanes stay zero).
#define BORDER(T, NAME)                                                                      \
extern "C" __global__ void NAME(T* dst, const T* src, int cs, int n, int h, int w, int top,  \
                                int left, int oh, int ow) {                                   \
    GRID_LOOP(i, (long)n * oh * ow * cs) {                                                    \
        long px = i / cs;                                                                     \
        int ch = (int)(i - px * cs);                                                          \
        long img = px / ((long)oh * ow);                                                      \
        long rem = px - img * oh * ow;                                                        \
        int y = (int)(rem / ow) - top, x = (int)(rem - (rem / ow) * ow) - left;               \
        y = y < 0 ? 0 : (y > h - 1 ? h - 1 : y);                                              \
        x = x < 0 ? 0 : (x > w - 1 ? w - 1 : x);                                              \
        st(dst, i, ld(src, ((img * h + y) * w + x) * cs + ch));                               \
    }                                                                                         \
}

// Squeeze-and-excitation (dplan.rs, Step::SqueezeExcite), in four launches over a float
// scratch: se_sum adds each of `slices` runs of an image's pixels per stored channel (in
// double), se_mean adds the slices in order and divides, se_dense is one layer
// act(W v + b) for every image, se_scale multiplies each channel by its gate.
#define SE_SUM(T, NAME)                                                                      \
extern "C" __global__ void NAME(double* part, const T* src, int cs, int n, long hw,         \
                                int slices) {                                                 \
    GRID_LOOP(i, (long)n * slices * cs) {                                                     \
        long img = i / ((long)slices * cs);                                                   \
        long rem = i - img * slices * cs;                                                     \
        long s = rem / cs;                                                                    \
        int ch = (int)(rem - s * cs);                                                         \
        long per = (hw + slices - 1) / slices;                                                \
        long p0 = s * per, p1 = p0 + per < hw ? p0 + per : hw;                                \
        double acc = 0.0;                                                                     \
        for (long q = p0; q < p1; q++) acc += (double)ld(src, (img * hw + q) * cs + ch);      \
        part[i] = acc;                                                                        \
    }                                                                                         \
}

#define SE_MEAN(T, NAME)                                                                     \
extern "C" __global__ void NAME(float* means, const double* part, int c, int cs, int n,     \
                                long hw, int slices) {                                        \
    GRID_LOOP(i, (long)n * c) {                                                               \
        long img = i / c;                                                                     \
        int ch = (int)(i - img * c);                                                          \
        double acc = 0.0;                                                                     \
        for (int s = 0; s < slices; s++) acc += part[(img * slices + s) * cs + ch];           \
        means[i] = (float)(acc / (double)hw);                                                 \
    }                                                                                         \
}

#define SE_DENSE(T, NAME)                                                                    \
extern "C" __global__ void NAME(float* out, const float* in, int n, int cin, int cout,      \
                                const float* wt, const float* bias, int act,                  \
                                const float* alpha, int nalpha, float p0, float p1) {         \
    GRID_LOOP(i, (long)n * cout) {                                                            \
        long img = i / cout;                                                                  \
        int o = (int)(i - img * cout);                                                        \
        float acc = bias ? bias[o] : 0.0f;                                                    \
        for (int k = 0; k < cin; k++) acc = acc + wt[(long)o * cin + k] * in[img * cin + k];  \
        out[i] = activate(acc, act, o, alpha, nalpha, p0, p1);                                \
    }                                                                                         \
}

#define SE_SCALE(T, NAME)                                                                    \
extern "C" __global__ void NAME(T* dst, const T* src, const float* gates, int c, int cs,     \
                                int n, long hw) {                                             \
    GRID_LOOP(i, (long)n * hw * cs) {                                                         \
        long px = i / cs;                                                                     \
        int ch = (int)(i - px * cs);                                                          \
        if (ch >= c) { st(dst, i, 0.0f); continue; }                                          \
        st(dst, i, ld(src, i) * gates[(px / hw) * c + ch]);                                   \
    }                                                                                         \
}

// Host input to the network's first value: f32 values, or 8-bit samples through the input
// map x = ((v + add[c]) * mul) / div of source channel perm[c].
struct InMap { int perm[4]; float add[4]; float mul; float div; };
struct OutMap { int perm[4]; float add[4]; float mul; };

#define INPUT(T, NAME)                                                                       \
extern "C" __global__ void NAME##_f32(T* dst, int cs, const float* src, int c, long npix) {  \
    GRID_LOOP(i, npix * cs) {                                                                 \
        long px = i / cs;                                                                     \
        int ch = (int)(i - px * cs);                                                          \
        st(dst, i, ch < c ? src[px * c + ch] : 0.0f);                                         \
    }                                                                                         \
}                                                                                             \
extern "C" __global__ void NAME##_u8(T* dst, int cs, const u8* src, int c, long npix,       \
                                     InMap m) {                                               \
    GRID_LOOP(i, npix * cs) {                                                                 \
        long px = i / cs;                                                                     \
        int ch = (int)(i - px * cs);                                                          \
        float v = 0.0f;                                                                       \
        if (ch < c) v = (((float)src[px * c + m.perm[ch]] + m.add[ch]) * m.mul) / m.div;      \
        st(dst, i, v);                                                                        \
    }                                                                                         \
}

// The network's output to the host: f32 values, or 8-bit samples
// saturate(round_half_even((v[perm[c]] + add[c]) * mul)); NaN becomes 0, as on the CPU.
#define OUTPUT(T, NAME)                                                                      \
extern "C" __global__ void NAME##_f32(float* dst, const T* src, int cs, int c, long npix) {  \
    GRID_LOOP(i, npix * c) {                                                                  \
        long px = i / c;                                                                      \
        int ch = (int)(i - px * c);                                                           \
        dst[i] = ld(src, px * cs + ch);                                                       \
    }                                                                                         \
}                                                                                             \
extern "C" __global__ void NAME##_u8(u8* dst, const T* src, int cs, int c, long npix,       \
                                     OutMap m) {                                              \
    GRID_LOOP(i, npix * c) {                                                                  \
        long px = i / c;                                                                      \
        int ch = (int)(i - px * c);                                                           \
        float r = rintf((ld(src, px * cs + m.perm[ch]) + m.add[ch]) * m.mul);                 \
        dst[i] = r >= 255.0f ? (u8)255 : (r > 0.0f ? (u8)r : (u8)0);                          \
    }                                                                                         \
}

#define ALL(T, S)                          \
    POINTWISE(T, pointwise_##S)            \
    BINARY(T, binary_##S)                  \
    DEPTH_TO_SPACE(T, depth_to_space_##S)  \
    RESIZE(T, resize_##S)                  \
    CONCAT(T, concat_##S)                  \
    PAD(T, pad_##S)                        \
    BORDER(T, border_##S)                  \
    SE_SUM(T, se_sum_##S)                  \
    SE_MEAN(T, se_mean_##S)                \
    SE_DENSE(T, se_dense_##S)              \
    SE_SCALE(T, se_scale_##S)              \
    INPUT(T, input_##S)                    \
    OUTPUT(T, output_##S)

ALL(float, f32)
ALL(f16, f16)
ALL(bf16, bf16)
