// loom prep: text -> byte-level token shards, with progress.
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "data/prep.h"
#include "launch/command_line.h"
#include "launch/commands.h"
#include "launch/progress.h"

namespace loom {

int PrepCommand(const std::vector<std::string>& args) {
  absl::StatusOr<CommandLine> cl = CommandLine::Parse(
      "prep", args, {"input", "output", "shard-tokens", "val-fraction"}, {"help"});
  if (cl.ok() && cl->Has("help")) {
    std::puts("loom prep --input PATH --output DIR [--shard-tokens N] [--val-fraction F]\n"
              "  PATH: a folder (every file below it is one document) or a JSONL file with a\n"
              "  \"text\" field. Writes DIR/train_*.bin and DIR/val_*.bin (byte tokens, EOT 256).");
    return 0;
  }
  PrepOptions options;
  absl::Status s = cl.status();
  if (s.ok()) {
    absl::StatusOr<std::string> input = cl->Required("input");
    absl::StatusOr<std::string> output = cl->Required("output");
    absl::StatusOr<int64_t> shard_tokens = cl->GetInt("shard-tokens", options.shard_tokens);
    absl::StatusOr<double> val = cl->GetDouble("val-fraction", 0.0);
    for (const absl::Status& st :
         {input.status(), output.status(), shard_tokens.status(), val.status()}) {
      if (s.ok() && !st.ok()) s = st;
    }
    if (s.ok()) {
      options.input = *input;
      options.output_dir = *output;
      options.shard_tokens = *shard_tokens;
      options.val_fraction = *val;
    }
  }
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 2;
  }
  const bool tty = isatty(fileno(stderr)) != 0;
  const auto start = std::chrono::steady_clock::now();
  int last_percent = -1;
  options.progress = [&](const PrepProgress& p) {
    const int percent = p.bytes_total ? static_cast<int>(100.0 * p.bytes_done / p.bytes_total) : 100;
    if (percent == last_percent || (!tty && percent % 10 != 0)) return;
    last_percent = percent;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double eta = p.bytes_done ? elapsed * (p.bytes_total - p.bytes_done) / p.bytes_done : -1;
    std::fprintf(stderr, "%sprep: %3d%%  %.1f / %.1f MiB  ETA %s%s", tty ? "\r\033[K" : "", percent,
                 p.bytes_done / 1048576.0, p.bytes_total / 1048576.0, FormatDuration(eta).c_str(),
                 tty ? "" : "\n");
  };
  absl::StatusOr<PrepResult> r = PrepareShards(options);
  if (tty) std::fputs("\n", stderr);
  if (!r.ok()) {
    std::fprintf(stderr, "loom prep: %s\n", std::string(r.status().message()).c_str());
    return 1;
  }
  std::printf("prep: %lld bytes -> train %lld documents, %lld tokens in %zu shard(s); "
              "val %lld documents, %lld tokens in %zu shard(s)\n",
              static_cast<long long>(r->input_bytes), static_cast<long long>(r->train_documents),
              static_cast<long long>(r->train_tokens), r->train_shards.size(),
              static_cast<long long>(r->val_documents), static_cast<long long>(r->val_tokens),
              r->val_shards.size());
  return 0;
}

}  // namespace loom
