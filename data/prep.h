// Text to token shards with byte-level tokens: every byte of the UTF-8 text is a token (0..255)
// and 256 is end-of-text, so prep needs no vocabulary download. This is the library behind
// `loom prep`.
//
// Input is either
//  - a folder: every regular file below it, recursively, is one document, taken in sorted order of
//    their paths (byte-wise) so that the output does not depend on the file system's listing order.
//    Links to files are read; links to folders are not followed (they could repeat documents or
//    loop); anything else that cannot be read (a dangling link, a socket) is an error;
//  - a file: JSON Lines, one object per line with a string field "text", one document per line
//    (blank lines are skipped).
// Each document is written as its bytes followed by one end-of-text token (the EOT closes the
// document; see document_index.h). Documents are split deterministically between training and
// validation: document i (counting from 0 in input order) goes to validation when
// floor((i + 1) * val_fraction) > floor(i * val_fraction), which sends exactly
// floor(n * val_fraction) of n documents, evenly spread, to validation and keeps document 0 in
// training. Output is `<output_dir>/train_NNNNNN.bin` and `val_NNNNNN.bin` (uint16 shards, laid
// out by ShardSetWriter); shards of those names left from an earlier run with more shards are
// removed, so the folder always holds exactly one prep's output. The same input always gives the
// same bytes. Each shard is written atomically; after an error the folder may hold some shards of
// the new output beside older ones, and the error says what to fix before running prep again.
#ifndef LOOM_DATA_PREP_H_
#define LOOM_DATA_PREP_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace loom {

inline constexpr int64_t kByteVocabSize = 257;
inline constexpr uint32_t kByteEndOfText = 256;

struct PrepProgress {
  uint64_t bytes_done = 0;   // input bytes consumed so far
  uint64_t bytes_total = 0;  // input bytes in all
};

struct PrepOptions {
  std::string input;                   // folder of text files, or a JSONL file
  std::string output_dir;              // created if missing; must not lie inside an input folder
  int64_t shard_tokens = 100'000'000;  // most tokens per shard
  double val_fraction = 0.0;           // in [0, 1)
  // Called as input is consumed (about every MiB, and once at the end with done == total).
  std::function<void(const PrepProgress&)> progress;
};

struct PrepResult {
  std::vector<std::string> train_shards;
  std::vector<std::string> val_shards;
  int64_t train_documents = 0;
  int64_t val_documents = 0;
  int64_t train_tokens = 0;
  int64_t val_tokens = 0;
  int64_t input_bytes = 0;
};

// Errors name the file (and line for JSONL): missing input, unreadable file, a line that is not
// JSON, not an object, or lacks a string "text"; an input with no documents; bad options.
absl::StatusOr<PrepResult> PrepareShards(const PrepOptions& options);

}  // namespace loom

#endif  // LOOM_DATA_PREP_H_
