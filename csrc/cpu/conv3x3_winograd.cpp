// fastgan::conv3x3_winograd and its gradients (conv3x3_winograd_grad_input, _grad_weight) on the CPU:
// 3x3, stride-1 convolutions of a padded input by Winograd's F(4x4, 3x3) (Lavin & Gray,
// "Fast Algorithms for Convolutional Neural Networks", 2016), the reflection padding read
// through an index map, never materialized.
//
// Each 4x4 output tile is A^T [(G g G^T) . (B^T d B)] A for the tile's 6x6 input d: in
// the transformed domain the channel sum is 36 independent matrix products, which run as
// one at::bmm (MKL), with 36 / (16 * 9 / 4) = 1/4 of the direct convolution's multiplies.
//   V = B^T d B   [36, N*T, C]   input tiles (T = tiles per image)
//   U = G g G^T   [36, K, C]     weights
//   M = V @ U^T   [36, N*T, K]   one bmm
//   y = A^T M A                  tiles written into the (N, K, Ho, Wo) output, + bias
// The gradients are the transposes of that linear map:
//   dW = G^T [sum over tiles of (A dY A^T) . V] G,  the sum again one bmm;
//   dx = the 6x6 windows B [(A dY A^T) @ U] B^T added where V read them (the padding's
//        back onto the pixels it mirrors), with the forward's U.
// U depends on the weights alone: conv3x3_winograd_weight computes it for a caller that
// reuses it across calls and passes (fastgan/ops/_weight_transforms.py), passed back as
// transformed_weight.
//
// Activations are read and written channels-last (NCHW inputs are converted once; the
// output is channels-last), so every transform is separable arithmetic on contiguous
// vectors of channels, one tile per task. float32 and float64. In float32 the
// transforms round: the error is up to ~50x that of a direct convolution (1.6e-5 of
// the output's magnitude at 256 channels), which is why the op's caller never uses it
// for 16-bit types.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace fastgan::cpu {
namespace {

constexpr int64_t kTile = 4;   // output tile
constexpr int64_t kInput = 6;  // input tile: kTile + 3 - 1
constexpr int64_t kPoints = kInput * kInput;

template <typename T>
constexpr T kSixth = T(1) / T(6);  // G's 1/6, 1/12, 1/24 as products: no divisions in the loops

// The transform matrices applied to one vector per lane: out_k[i] = sum_j M[k][j] in_j[i].
// Outputs never alias inputs (omp simd: vectorize without a runtime overlap check).

// B^T (6x6): input rows -> transformed rows.
template <typename T>
void apply_bt(const T* const in[6], T* const out[6], int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T a0 = in[0][i], a1 = in[1][i], a2 = in[2][i], a3 = in[3][i], a4 = in[4][i], a5 = in[5][i];
    out[0][i] = T(4) * a0 - T(5) * a2 + a4;
    out[1][i] = -T(4) * (a1 + a2) + a3 + a4;
    out[2][i] = T(4) * (a1 - a2) - a3 + a4;
    out[3][i] = T(2) * (a3 - a1) - a2 + a4;
    out[4][i] = T(2) * (a1 - a3) - a2 + a4;
    out[5][i] = T(4) * a1 - T(5) * a3 + a5;
  }
}

// B (6x6), the transpose of B^T: transformed input-gradient rows -> input-gradient rows.
template <typename T>
void apply_b(const T* const in[6], T* const out[6], int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T m0 = in[0][i], m1 = in[1][i], m2 = in[2][i], m3 = in[3][i], m4 = in[4][i], m5 = in[5][i];
    const T s34 = m3 + m4, d34 = m3 - m4;
    out[0][i] = T(4) * m0;
    out[1][i] = T(4) * (m2 - m1) + T(2) * (m4 - m3) + T(4) * m5;
    out[2][i] = -T(5) * m0 - T(4) * (m1 + m2) - s34;
    out[3][i] = m1 - m2 + T(2) * d34 - T(5) * m5;
    out[4][i] = m0 + m1 + m2 + s34;
    out[5][i] = m5;
  }
}

// A^T (4x6): transformed rows -> output rows.
template <typename T>
void apply_at(const T* const in[6], T* const out[4], int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T m0 = in[0][i], m1 = in[1][i], m2 = in[2][i], m3 = in[3][i], m4 = in[4][i], m5 = in[5][i];
    const T s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
    out[0][i] = m0 + s12 + s34;
    out[1][i] = d12 + T(2) * d34;
    out[2][i] = s12 + T(4) * s34;
    out[3][i] = d12 + T(8) * d34 + m5;
  }
}

// A (6x4), the transpose of A^T: output-gradient rows -> transformed rows.
template <typename T>
void apply_a(const T* const in[4], T* const out[6], int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T y0 = in[0][i], y1 = in[1][i], y2 = in[2][i], y3 = in[3][i];
    const T s02 = y0 + y2, s13 = y1 + y3, e02 = y0 + T(4) * y2, e13 = T(2) * y1 + T(8) * y3;
    out[0][i] = y0;
    out[1][i] = s02 + s13;
    out[2][i] = s02 - s13;
    out[3][i] = e02 + e13;
    out[4][i] = e02 - e13;
    out[5][i] = y3;
  }
}

// G (6x3): weight rows -> transformed rows.
template <typename T>
void apply_g(const T* const in[3], T* const out[6], int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T g0 = in[0][i], g1 = in[1][i], g2 = in[2][i];
    const T s02 = g0 + g2, e02 = g0 * kSixth<T> * T(0.25) + g2 * kSixth<T>, o1 = g1 * kSixth<T> * T(0.5);
    out[0][i] = g0 * T(0.25);
    out[1][i] = -(s02 + g1) * kSixth<T>;
    out[2][i] = -(s02 - g1) * kSixth<T>;
    out[3][i] = e02 + o1;
    out[4][i] = e02 - o1;
    out[5][i] = g2;
  }
}

// G^T (3x6), the transpose of G: transformed weight-gradient rows -> 3 rows.
template <typename T>
void apply_gt(const T* const in[6], T* const out[3], int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T s0 = in[0][i], s1 = in[1][i], s2 = in[2][i], s3 = in[3][i], s4 = in[4][i], s5 = in[5][i];
    const T s12 = s1 + s2, s34 = s3 + s4;
    out[0][i] = s0 * T(0.25) + (s34 * T(0.25) - s12) * kSixth<T>;
    out[1][i] = ((s3 - s4) * T(0.5) + s2 - s1) * kSixth<T>;
    out[2][i] = (s34 - s12) * kSixth<T> + s5;
  }
}

// Where padded row/column u reads the unpadded input from, reflected (torch's "reflect");
// -1 for a zero: rows past the padded extent (the last tile's overhang, whose outputs are
// cut off) read zeros.
std::vector<int64_t> source_index(int64_t count, int64_t size, int64_t padding) {
  std::vector<int64_t> index(count);
  for (int64_t u = 0; u < count; ++u) {
    const int64_t i = u - padding;
    index[u] = u >= size + 2 * padding ? -1 : (i < 0 ? -i : (i >= size ? 2 * (size - 1) - i : i));
  }
  return index;
}

struct Geometry {
  int64_t n, channels, height, width, padding;
  int64_t out_h, out_w, tiles_h, tiles_w;
  int64_t tiles() const { return tiles_h * tiles_w; }
};

Geometry geometry(const at::Tensor& x, int64_t padding) {
  Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), padding, 0, 0, 0, 0};
  g.out_h = g.height + 2 * padding - 2;
  g.out_w = g.width + 2 * padding - 2;
  g.tiles_h = (g.out_h + kTile - 1) / kTile;
  g.tiles_w = (g.out_w + kTile - 1) / kTile;
  return g;
}

// The tiles of a tile-parallel transform: the tile index t (n * T + th * TW + tw) and
// its coordinates.
struct TileIndex {
  int64_t n, th, tw;
};

inline TileIndex tile_at(const Geometry& g, int64_t t) {
  return {t / g.tiles(), (t % g.tiles()) / g.tiles_w, t % g.tiles_w};
}

// V[36][N*T][C] = B^T d B of every input tile of x (channels-last: N, H, W, C), each
// transform vectorized along the channels.
template <typename T>
void input_transform(const T* x, const Geometry& g, T* v) {
  const int64_t c = g.channels, nt = g.n * g.tiles();
  const auto row_src = source_index(kTile * g.tiles_h + 2, g.height, g.padding);
  const auto col_src = source_index(kTile * g.tiles_w + 2, g.width, g.padding);
  at::parallel_for(0, nt, 1, [&](int64_t begin, int64_t end) {
    const std::vector<T> zeros(c, T(0));
    std::vector<T> down(kPoints * c);  // B^T down the tile's columns: down[xi][s][channel]
    for (int64_t t = begin; t < end; ++t) {
      const TileIndex at = tile_at(g, t);
      for (int64_t s = 0; s < kInput; ++s) {
        const int64_t sc = col_src[kTile * at.tw + s];
        const T* in[kInput];
        T* out[kInput];
        for (int64_t r = 0; r < kInput; ++r) {
          const int64_t sr = row_src[kTile * at.th + r];
          in[r] = (sr < 0 || sc < 0) ? zeros.data() : x + ((at.n * g.height + sr) * g.width + sc) * c;
          out[r] = &down[(r * kInput + s) * c];
        }
        apply_bt<T>(in, out, c);
      }
      for (int64_t xi = 0; xi < kInput; ++xi) {
        const T* in[kInput];
        T* out[kInput];
        for (int64_t s = 0; s < kInput; ++s) {
          in[s] = &down[(xi * kInput + s) * c];
          out[s] = v + ((xi * kInput + s) * nt + t) * c;
        }
        apply_bt<T>(in, out, c);
      }
    }
  });
}

// A (K, C, 3, 3) filter bank read in place through its strides (any layout; negative
// strides read it rotated): filter (k, c) tap (r, s) is at base[k*sk + c*sc + r*sr + s*ss].
template <typename T>
struct Filters {
  T* base;
  int64_t sk, sc, sr, ss;
  T& at(int64_t k, int64_t c, int64_t r, int64_t s) const { return base[k * sk + c * sc + r * sr + s * ss]; }
};

// A (K, C, 3, 3) weight's filters, any layout.
template <typename T>
Filters<T> filters_of(const at::Tensor& weight) {
  return {weight.data_ptr<T>(), weight.stride(0), weight.stride(1), weight.stride(2), weight.stride(3)};
}

constexpr int64_t kFilterBlock = 16;  // filters gathered together

// taps[kk][t][c] = tap t (= 3r + s) of filter (k0 + kk, c), kk < count.
template <typename T>
void gather_taps(const Filters<const T>& w, int64_t k0, int64_t count, int64_t channels, T* taps) {
  for (int64_t kk = 0; kk < count; ++kk) {
    for (int64_t t = 0; t < 9; ++t) {
      for (int64_t c = 0; c < channels; ++c) {
        taps[(kk * 9 + t) * channels + c] = w.at(k0 + kk, c, t / 3, t % 3);
      }
    }
  }
}

// U[36][K][C] = G g G^T of every (k, c) filter g.
template <typename T>
void weight_transform(const Filters<const T>& w, int64_t out_channels, int64_t channels, T* u) {
  const int64_t blocks = (out_channels + kFilterBlock - 1) / kFilterBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> taps(kFilterBlock * 9 * channels), mixed(kInput * 3 * channels);
    for (int64_t block = begin; block < end; ++block) {
      const int64_t k0 = block * kFilterBlock, count = std::min(kFilterBlock, out_channels - k0);
      gather_taps(w, k0, count, channels, taps.data());
      for (int64_t kk = 0; kk < count; ++kk) {
        const T* tap = &taps[kk * 9 * channels];
        // down the filter's rows, for each of its 3 columns: mixed[xi][s]
        for (int64_t s = 0; s < 3; ++s) {
          const T* in[3] = {&tap[s * channels], &tap[(3 + s) * channels], &tap[(6 + s) * channels]};
          T* dst[kInput];
          for (int64_t xi = 0; xi < kInput; ++xi) {
            dst[xi] = &mixed[(xi * 3 + s) * channels];
          }
          apply_g<T>(in, dst, channels);
        }
        for (int64_t xi = 0; xi < kInput; ++xi) {
          const T* in[3] = {&mixed[(xi * 3) * channels], &mixed[(xi * 3 + 1) * channels],
                            &mixed[(xi * 3 + 2) * channels]};
          T* dst[kInput];
          for (int64_t eta = 0; eta < kInput; ++eta) {
            dst[eta] = u + ((xi * kInput + eta) * out_channels + k0 + kk) * channels;
          }
          apply_g<T>(in, dst, channels);
        }
      }
    }
  });
}

// y (channels-last: N, Ho, Wo, K) = A^T M A of every tile of M[36][N*T][K], + bias,
// vectorized along the output channels.
template <typename T>
void output_transform(const T* m, const T* bias, const Geometry& g, int64_t out_channels, T* y) {
  const int64_t k = out_channels, nt = g.n * g.tiles();
  at::parallel_for(0, nt, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> across(kInput * kTile * k), cut_off(k);  // cut_off: outputs past Ho, Wo
    for (int64_t t = begin; t < end; ++t) {
      const TileIndex at = tile_at(g, t);
      for (int64_t xi = 0; xi < kInput; ++xi) {
        const T* in[kInput];
        for (int64_t eta = 0; eta < kInput; ++eta) {
          in[eta] = m + ((xi * kInput + eta) * nt + t) * k;
        }
        T* out[kTile];
        for (int64_t j = 0; j < kTile; ++j) {
          out[j] = &across[(xi * kTile + j) * k];
        }
        apply_at<T>(in, out, k);
      }
      for (int64_t j = 0; j < kTile; ++j) {
        const int64_t col = kTile * at.tw + j;
        const T* in[kInput];
        for (int64_t xi = 0; xi < kInput; ++xi) {
          in[xi] = &across[(xi * kTile + j) * k];
        }
        T* out[kTile];
        for (int64_t i = 0; i < kTile; ++i) {
          const int64_t row = kTile * at.th + i;
          out[i] = (row < g.out_h && col < g.out_w) ? y + ((at.n * g.out_h + row) * g.out_w + col) * k
                                                    : cut_off.data();
        }
        apply_at<T>(in, out, k);
        if (bias) {
          for (int64_t i = 0; i < kTile; ++i) {
            T* o = out[i];
#pragma omp simd
            for (int64_t ch = 0; ch < k; ++ch) {
              o[ch] += bias[ch];
            }
          }
        }
      }
    }
  });
}

// Z[36][N*T][K] = A dY A^T of every 4x4 tile of the output gradient (channels-last;
// zeros past Ho, Wo), vectorized along the output channels.
template <typename T>
void grad_output_transform(const T* dy, const Geometry& g, int64_t out_channels, T* z) {
  const int64_t k = out_channels, nt = g.n * g.tiles();
  at::parallel_for(0, nt, 1, [&](int64_t begin, int64_t end) {
    const std::vector<T> zeros(k, T(0));
    std::vector<T> down(kInput * kTile * k);  // A down the tile's columns: down[xi][j][channel]
    for (int64_t t = begin; t < end; ++t) {
      const TileIndex at = tile_at(g, t);
      for (int64_t j = 0; j < kTile; ++j) {
        const int64_t col = kTile * at.tw + j;
        const T* in[kTile];
        for (int64_t i = 0; i < kTile; ++i) {
          const int64_t row = kTile * at.th + i;
          in[i] = (row < g.out_h && col < g.out_w) ? dy + ((at.n * g.out_h + row) * g.out_w + col) * k
                                                   : zeros.data();
        }
        T* out[kInput];
        for (int64_t xi = 0; xi < kInput; ++xi) {
          out[xi] = &down[(xi * kTile + j) * k];
        }
        apply_a<T>(in, out, k);
      }
      for (int64_t xi = 0; xi < kInput; ++xi) {
        const T* in[kTile];
        for (int64_t j = 0; j < kTile; ++j) {
          in[j] = &down[(xi * kTile + j) * k];
        }
        T* out[kInput];
        for (int64_t eta = 0; eta < kInput; ++eta) {
          out[eta] = z + ((xi * kInput + eta) * nt + t) * k;
        }
        apply_a<T>(in, out, k);
      }
    }
  });
}

// Tiles of a row (or column) apart that input_grad_transform may run at once: tile t
// writes padded rows [4t, 4t + 6), the first tile up to 2p too (its reflected border),
// a last tile down to 4t - 2p (its reflected border), so tiles m apart never meet when
// 4m > 5 + 2p and, for the first tile, 4m > 4p.
int64_t adjoint_tile_step(int64_t padding) {
  return std::max((5 + 2 * padding) / kTile + 1, padding + 1);
}

// dx (channels-last: N, H, W, C, zeroed) += B dV B^T of every tile of dV[36][N*T][C],
// each 6x6 window added where the input transform read it (a reflected border back onto
// the pixels it mirrors, the overhang's zeros nowhere): the adjoint of input_transform. Windows of
// neighbouring tiles overlap, so the tiles run in m x m passes by their row and column
// modulo m = adjoint_tile_step (4 passes at padding 1): within a pass no two tiles write
// the same pixel, and the sum's order is fixed.
template <typename T>
void input_grad_transform(const T* dv, const Geometry& g, T* dx) {
  const int64_t c = g.channels, nt = g.n * g.tiles(), m = adjoint_tile_step(g.padding);
  const auto row_src = source_index(kTile * g.tiles_h + 2, g.height, g.padding);
  const auto col_src = source_index(kTile * g.tiles_w + 2, g.width, g.padding);
  for (int64_t pass = 0; pass < m * m; ++pass) {
    at::parallel_for(0, nt, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> across(kPoints * c), window(kPoints * c);  // across[xi][s], window[r][s]
      for (int64_t t = begin; t < end; ++t) {
        const TileIndex at = tile_at(g, t);
        if ((at.th % m) * m + at.tw % m != pass) continue;
        for (int64_t xi = 0; xi < kInput; ++xi) {
          const T* in[kInput];
          T* out[kInput];
          for (int64_t eta = 0; eta < kInput; ++eta) {
            in[eta] = dv + ((xi * kInput + eta) * nt + t) * c;
            out[eta] = &across[(xi * kInput + eta) * c];
          }
          apply_b<T>(in, out, c);
        }
        for (int64_t s = 0; s < kInput; ++s) {
          const T* in[kInput];
          T* out[kInput];
          for (int64_t xi = 0; xi < kInput; ++xi) {
            in[xi] = &across[(xi * kInput + s) * c];
            out[xi] = &window[(xi * kInput + s) * c];
          }
          apply_b<T>(in, out, c);
        }
        for (int64_t r = 0; r < kInput; ++r) {
          const int64_t sr = row_src[kTile * at.th + r];
          for (int64_t s = 0; s < kInput; ++s) {
            const int64_t sc = col_src[kTile * at.tw + s];
            if (sr < 0 || sc < 0) continue;
            T* o = dx + ((at.n * g.height + sr) * g.width + sc) * c;
            const T* w = &window[(r * kInput + s) * c];
#pragma omp simd
            for (int64_t ch = 0; ch < c; ++ch) {
              o[ch] += w[ch];
            }
          }
        }
      }
    });
  }
}

// dW (K, C, 3, 3, any layout) = G^T S G of every (k, c) from S[36][K][C].
template <typename T>
void weight_grad_transform(const T* s, int64_t out_channels, int64_t channels, const Filters<T>& dw) {
  at::parallel_for(0, out_channels, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> mixed(kInput * 3 * channels), taps(9 * channels);
    for (int64_t k = begin; k < end; ++k) {
      // along each transformed row xi: mixed[xi][col]
      for (int64_t xi = 0; xi < kInput; ++xi) {
        const T* in[kInput];
        for (int64_t eta = 0; eta < kInput; ++eta) {
          in[eta] = s + ((xi * kInput + eta) * out_channels + k) * channels;
        }
        T* out[3];
        for (int64_t col = 0; col < 3; ++col) {
          out[col] = &mixed[(xi * 3 + col) * channels];
        }
        apply_gt<T>(in, out, channels);
      }
      for (int64_t col = 0; col < 3; ++col) {
        const T* in[kInput];
        for (int64_t xi = 0; xi < kInput; ++xi) {
          in[xi] = &mixed[(xi * 3 + col) * channels];
        }
        T* out[3] = {&taps[col * channels], &taps[(3 + col) * channels], &taps[(6 + col) * channels]};
        apply_gt<T>(in, out, channels);
      }
      for (int64_t t = 0; t < 9; ++t) {
        for (int64_t c = 0; c < channels; ++c) {
          dw.at(k, c, t / 3, t % 3) = taps[t * channels + c];
        }
      }
    }
  });
}

void check_input(const char* op, const at::Tensor& x, int64_t padding) {
  TORCH_CHECK(x.dim() == 4, op, ": expected a 4-D input, got ", x.dim(), " dimensions");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": float32 or float64 only, got ", x.scalar_type());
  TORCH_CHECK(padding >= 0, op, ": padding must be >= 0, got ", padding);
  TORCH_CHECK(padding < x.size(2) && padding < x.size(3), op, ": reflection padding ", padding,
              " must be smaller than the input's height and width, got ", x.sizes());
  TORCH_CHECK(x.size(2) + 2 * padding >= 3 && x.size(3) + 2 * padding >= 3, op,
              ": the padded input is smaller than the 3x3 kernel, got ", x.sizes(), " with padding ", padding);
}

// The input tiles' transform V as a [36, N*T, C] tensor.
at::Tensor transformed_input(const at::Tensor& x, const Geometry& g) {
  auto v = at::empty({kPoints, g.n * g.tiles(), g.channels}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv3x3_winograd_input", [&] {
    input_transform<scalar_t>(x.data_ptr<scalar_t>(), g, v.data_ptr<scalar_t>());
  });
  return v;
}

// U (36, K, C) of a (K, C, 3, 3) weight.
at::Tensor transformed_weight(const at::Tensor& weight) {
  const int64_t channels = weight.size(1), out_channels = weight.size(0);
  auto u = at::empty({kPoints, out_channels, channels}, weight.options());
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "conv3x3_winograd_weight", [&] {
    const auto f = filters_of<scalar_t>(weight);
    weight_transform<scalar_t>({f.base, f.sk, f.sc, f.sr, f.ss}, out_channels, channels, u.data_ptr<scalar_t>());
  });
  return u;
}

void check_weight(const char* op, const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3, op,
              ": weight must be a 3x3 filter bank (4-d, 3x3), got ", weight.sizes());
  TORCH_CHECK(weight.device().is_cpu(), op, ": a CPU weight only, got one on ", weight.device());
  TORCH_CHECK(weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kDouble, op,
              ": float32 or float64 only, got ", weight.scalar_type());
}

at::Tensor conv3x3_winograd_weight_cpu(const at::Tensor& weight) {
  check_weight("conv3x3_winograd_weight", weight);
  return transformed_weight(weight);
}

at::Tensor conv3x3_winograd_cpu(const at::Tensor& input, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, int64_t padding,
                                const std::optional<at::Tensor>& transformed) {
  const char* op = "conv3x3_winograd";
  check_input(op, input, padding);
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == input.size(1) && weight.size(2) == 3 && weight.size(3) == 3,
              op, ": weight must be (K, ", input.size(1), ", 3, 3), got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == input.scalar_type() && weight.device() == input.device(), op,
              ": input and weight must share dtype and device");
  const int64_t out_channels = weight.size(0);
  TORCH_CHECK(!transformed || (transformed->sizes() == at::IntArrayRef{kPoints, out_channels, input.size(1)} &&
                               transformed->is_contiguous() && transformed->scalar_type() == input.scalar_type() &&
                               transformed->device() == input.device()),
              op, ": transformed_weight must be a contiguous (", kPoints, ", ", out_channels, ", ", input.size(1),
              ") tensor of the input's dtype and device (conv3x3_winograd_weight's), got ",
              transformed ? transformed->sizes() : at::IntArrayRef{});
  TORCH_CHECK(!bias || (bias->dim() == 1 && bias->size(0) == out_channels &&
                        bias->scalar_type() == input.scalar_type() && bias->device() == input.device()),
              op, ": bias must be a (", out_channels, ",) tensor of the input's dtype and device");
  const auto x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const auto b = bias ? bias->contiguous() : at::Tensor();
  const Geometry g = geometry(x, padding);
  auto y = at::empty({g.n, out_channels, g.out_h, g.out_w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const auto v = transformed_input(x, g);
  const auto u = transformed ? *transformed : transformed_weight(weight);
  const auto m = at::bmm(v, u.transpose(1, 2));  // [36, N*T, K]
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv3x3_winograd_output", [&] {
    output_transform<scalar_t>(m.data_ptr<scalar_t>(), b.defined() ? b.data_ptr<scalar_t>() : nullptr, g,
                               out_channels, y.data_ptr<scalar_t>());
  });
  return y;
}

at::Tensor conv3x3_winograd_grad_weight_cpu(const at::Tensor& grad, const at::Tensor& input, int64_t padding,
                                            bool channels_last) {
  const char* op = "conv3x3_winograd_grad_weight";
  check_input(op, input, padding);
  const auto x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const Geometry g = geometry(x, padding);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == g.n && grad.size(2) == g.out_h && grad.size(3) == g.out_w, op,
              ": grad must be (", g.n, ", K, ", g.out_h, ", ", g.out_w, "), got ", grad.sizes());
  TORCH_CHECK(grad.scalar_type() == x.scalar_type() && grad.device() == x.device(), op,
              ": grad and input must share dtype and device");
  const auto dy = grad.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t out_channels = dy.size(1);
  auto z = at::empty({kPoints, g.n * g.tiles(), out_channels}, x.options());
  auto dw = at::empty({out_channels, g.channels, 3, 3},
                      x.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                              : at::MemoryFormat::Contiguous));
  const auto v = transformed_input(x, g);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv3x3_winograd_grad_output", [&] {
    grad_output_transform<scalar_t>(dy.data_ptr<scalar_t>(), g, out_channels, z.data_ptr<scalar_t>());
  });
  const auto s = at::bmm(z.transpose(1, 2), v);  // [36, K, C]
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv3x3_winograd_grad_weight", [&] {
    weight_grad_transform<scalar_t>(s.data_ptr<scalar_t>(), out_channels, g.channels, filters_of<scalar_t>(dw));
  });
  return dw;
}

at::Tensor conv3x3_winograd_grad_input_cpu(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight,
                                           int64_t padding,
                                           const std::optional<at::Tensor>& transformed) {
  const char* op = "conv3x3_winograd_grad_input";
  check_input(op, input, padding);
  const Geometry g = geometry(input, padding);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == g.n && grad.size(2) == g.out_h && grad.size(3) == g.out_w, op,
              ": grad must be (", g.n, ", K, ", g.out_h, ", ", g.out_w, "), got ", grad.sizes());
  const int64_t out_channels = grad.size(1);
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == out_channels && weight.size(1) == g.channels &&
                  weight.size(2) == 3 && weight.size(3) == 3,
              op, ": weight must be (", out_channels, ", ", g.channels, ", 3, 3), got ", weight.sizes());
  TORCH_CHECK(grad.scalar_type() == input.scalar_type() && weight.scalar_type() == input.scalar_type() &&
                  grad.device() == input.device() && weight.device() == input.device(),
              op, ": grad, input and weight must share dtype and device");
  TORCH_CHECK(!transformed || (transformed->sizes() == at::IntArrayRef{kPoints, out_channels, g.channels} &&
                               transformed->is_contiguous() && transformed->scalar_type() == input.scalar_type() &&
                               transformed->device() == input.device()),
              op, ": transformed_weight must be a contiguous (", kPoints, ", ", out_channels, ", ", g.channels,
              ") tensor of the input's dtype and device (conv3x3_winograd_weight's), got ",
              transformed ? transformed->sizes() : at::IntArrayRef{});
  const auto dy = grad.contiguous(at::MemoryFormat::ChannelsLast);
  auto z = at::empty({kPoints, g.n * g.tiles(), out_channels}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv3x3_winograd_grad_output", [&] {
    grad_output_transform<scalar_t>(dy.data_ptr<scalar_t>(), g, out_channels, z.data_ptr<scalar_t>());
  });
  const auto u = transformed ? *transformed : transformed_weight(weight);
  const auto dv = at::bmm(z, u);  // [36, N*T, C]
  auto dx = at::empty({g.n, g.channels, g.height, g.width},
                      input.options().memory_format(at::MemoryFormat::ChannelsLast)).zero_();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv3x3_winograd_grad_input", [&] {
    input_grad_transform<scalar_t>(dv.data_ptr<scalar_t>(), g, dx.data_ptr<scalar_t>());
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("conv3x3_winograd", &conv3x3_winograd_cpu);
  m.impl("conv3x3_winograd_weight", &conv3x3_winograd_weight_cpu);
  m.impl("conv3x3_winograd_grad_weight", &conv3x3_winograd_grad_weight_cpu);
  m.impl("conv3x3_winograd_grad_input", &conv3x3_winograd_grad_input_cpu);
}

}  // namespace fastgan::cpu
