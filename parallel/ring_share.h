// Which tokens of a sequence each member of a ring holds. Zigzag, as parallel/zigzag.h shards
// documents: the sequence is cut into 2c pieces whose lengths differ by at most one, and member i
// holds pieces i and 2c-1-i, so that under the causal mask every member does about 1/c of the
// attention work. Empty pieces (a sequence shorter than 2c) are left out.
#ifndef LOOM_PARALLEL_RING_SHARE_H_
#define LOOM_PARALLEL_RING_SHARE_H_

#include <cstdint>
#include <vector>

#include "parallel/step_plan.h"

namespace loom {

// Member `member`'s token ranges of a sequence of `length` tokens spread over `members` ranks.
std::vector<TokenRange> ZigzagShare(int64_t sequence_id, int64_t length, int members, int member);

// The same ranges written to out[0] and out[1], returning how many there are (0 to 2): planners
// at scale ask for every member of tens of thousands of rings, several times each, and a vector
// each time is an allocation per ask.
int ZigzagShareInto(int64_t sequence_id, int64_t length, int members, int member,
                    TokenRange out[2]);

}  // namespace loom

#endif  // LOOM_PARALLEL_RING_SHARE_H_
