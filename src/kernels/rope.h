// Rotary position embedding, Hugging Face LLaMA convention ("rotate half": the pair of element i
// is element i + D/2). Positions are explicit per token, so they stay positions within the
// document after packing, sharding and chunking.
#ifndef LOOM_SRC_KERNELS_ROPE_H_
#define LOOM_SRC_KERNELS_ROPE_H_

#include <cstdint>
#include <vector>

namespace loom {

// cos/sin tables for a list of positions: cos[t * D/2 + i] = cos(pos[t] * theta^(-2i/D)).
struct RopeTable {
  int T = 0;
  int half = 0;  // head_dim / 2
  std::vector<float> cos;
  std::vector<float> sin;
};
RopeTable MakeRopeTable(const int32_t* pos, int T, int head_dim, float theta);

// x: [T, H, D]; out may alias inp. out[..i] = x[i]*cos - x[i+D/2]*sin,
// out[..i+D/2] = x[i+D/2]*cos + x[i]*sin.
void RopeForward(float* out, const float* inp, const RopeTable& table, int T, int H, int D);
// Accumulates dinp += R^T dout (dinp must not alias dout).
void RopeBackward(float* dinp, const float* dout, const RopeTable& table, int T, int H, int D);

}  // namespace loom

#endif  // LOOM_SRC_KERNELS_ROPE_H_
