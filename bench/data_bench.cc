// The data path's throughput: open (mmap + vocabulary check), document index, global batch
// sampling, and packing each batch into flat int32 tokens / targets / positions / sequence ids,
// over a synthetic shard set with ByteScale's Byted length distribution. The training loop must
// never wait on this path, so its tokens/s should sit far above the `step` benchmark's.
//
// The shard set (1 GiB of uint16 tokens; 64 MiB with --quick) is generated once and kept under
// $LOOM_BUILD_DIR/bench-data (default build/bench-data) when that build folder exists, otherwise in
// a temporary folder removed afterwards. Figures are medians over --repeats after one untimed
// warm-up pass, so they describe a warm page cache.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "bench/bench.h"
#include "data/batch_sampler.h"
#include "data/length_distribution.h"
#include "data/packed_batch.h"
#include "data/prep.h"
#include "data/synthetic.h"
#include "data/token_dataset.h"
#include "nlohmann/json.hpp"

namespace loom::bench {
namespace {

namespace fs = std::filesystem;

constexpr const char* kDistribution = "byted";
constexpr uint64_t kSeed = 1;
constexpr int64_t kTokensPerBatch = int64_t{4} << 20;
constexpr int64_t kMaxSequenceLength = int64_t{2} << 20;

[[noreturn]] void Fail(const absl::Status& status) {
  std::fprintf(stderr, "data bench: %s\n", status.ToString().c_str());
  std::exit(1);
}

template <typename T>
T OrDie(absl::StatusOr<T> value) {
  if (!value.ok()) Fail(value.status());
  return std::move(value).value();
}

struct ShardSet {
  std::string folder;
  std::vector<std::string> paths;
  bool reused = false;
  bool temporary = false;
  double generate_s = 0.0;
};

// The shard set for `total_tokens`, reused when a complete earlier one is there. A manifest
// written after the last shard marks a set complete and records what it was generated with.
ShardSet PrepareShardSet(int64_t total_tokens, int64_t shard_tokens) {
  ShardSet set;
  const char* build_env = std::getenv("LOOM_BUILD_DIR");
  const fs::path build = build_env != nullptr ? build_env : "build";
  const nlohmann::json wanted = {{"distribution", kDistribution},
                                 {"seed", kSeed},
                                 {"total_tokens", total_tokens},
                                 {"shard_tokens", shard_tokens}};
  if (fs::is_directory(build)) {
    set.folder =
        (build / "bench-data" / ("byted-" + std::to_string(total_tokens >> 20) + "Mtok-seed1"))
            .string();
  } else {
    std::string pattern = (fs::temp_directory_path() / "loom_data_bench_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) Fail(absl::InternalError("mkdtemp failed"));
    set.folder = pattern;
    set.temporary = true;
  }
  const fs::path manifest = fs::path(set.folder) / "manifest.json";
  std::ifstream in(manifest);
  if (in) {
    const nlohmann::json found = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (!found.is_discarded() && found.value("config", nlohmann::json()) == wanted &&
        found.contains("shards")) {
      for (const auto& name : found["shards"]) {
        set.paths.push_back((fs::path(set.folder) / name.get<std::string>()).string());
      }
      bool all_there = !set.paths.empty();
      for (const std::string& p : set.paths) all_there = all_there && fs::exists(p);
      if (all_there) {
        set.reused = true;
        return set;
      }
      set.paths.clear();
    }
  }
  std::error_code ec;
  fs::remove_all(set.folder, ec);
  const LengthDistribution lengths = OrDie(LengthDistribution::Preset(kDistribution));
  SyntheticShardOptions options;
  options.output_dir = set.folder;
  options.total_tokens = total_tokens;
  options.shard_tokens = shard_tokens;
  options.seed = kSeed;
  std::printf("generating %lld tokens of synthetic shards in %s ...\n",
              static_cast<long long>(total_tokens), set.folder.c_str());
  std::fflush(stdout);
  set.generate_s = TimeSeconds([&] { set.paths = OrDie(WriteSyntheticShards(lengths, options)); });
  nlohmann::json record = {{"config", wanted}, {"shards", nlohmann::json::array()}};
  for (const std::string& p : set.paths) record["shards"].push_back(fs::path(p).filename());
  std::ofstream(manifest) << record.dump(1) << "\n";
  return set;
}

struct PassTimes {
  double open_s = 0.0;     // mmap + header and vocabulary checks of every shard
  double index_s = 0.0;    // EOT scan of every shard
  double dataset_s = 0.0;  // TokenDataset::Open without cache: what a cold start pays
  double cached_s = 0.0;   // TokenDataset::Open with a valid index cache
  double sampler_s = 0.0;  // BatchSampler::Create: sequences, fingerprint, first shuffle
  double pack_s = 0.0;     // one epoch of Next() + PackBatch()
  int64_t batches = 0;
  int64_t packed_tokens = 0;
};

PassTimes RunPass(const std::vector<std::string>& paths) {
  PassTimes t;
  DatasetOptions options;
  options.vocab_size = kByteVocabSize;
  options.eot_token = kByteEndOfText;
  {
    std::vector<Shard> shards;
    t.open_s = TimeSeconds([&] {
      for (const std::string& p : paths) shards.push_back(OrDie(Shard::Open(p, kByteVocabSize)));
    });
    t.index_s = TimeSeconds([&] {
      for (const Shard& s : shards) DocumentIndex::Build(s, kByteEndOfText);
    });
  }
  options.index_cache = IndexCache::kReadWrite;
  OrDie(TokenDataset::Open(paths, options));  // makes sure a cache exists for the timing below
  t.cached_s = TimeSeconds([&] { OrDie(TokenDataset::Open(paths, options)); });

  options.index_cache = IndexCache::kOff;
  std::optional<TokenDataset> dataset;
  t.dataset_s = TimeSeconds([&] { dataset.emplace(OrDie(TokenDataset::Open(paths, options))); });
  BatchSamplerConfig config;
  config.tokens_per_batch = kTokensPerBatch;
  config.max_sequence_length = kMaxSequenceLength;
  config.oversize = OversizePolicy::kSplit;
  config.seed = kSeed;
  std::optional<BatchSampler> sampler;
  t.sampler_s = TimeSeconds([&] {
    const std::vector<int64_t> lengths = dataset->DocumentLengths();
    sampler.emplace(OrDie(BatchSampler::Create(lengths, config)));
  });
  PackedBatch packed;
  t.pack_s = TimeSeconds([&] {
    do {
      const GlobalBatch batch = sampler->Next();
      PackBatch(*dataset, batch, &packed);
      t.packed_tokens += static_cast<int64_t>(packed.tokens.size());
      ++t.batches;
    } while (sampler->position().epoch == 0);
  });
  return t;
}

nlohmann::json DataBench(const BenchOptions& options) {
  const int64_t total_tokens = options.quick ? (int64_t{32} << 20) : (int64_t{512} << 20);
  const int64_t shard_tokens = options.quick ? (int64_t{8} << 20) : (int64_t{64} << 20);
  const ShardSet set = PrepareShardSet(total_tokens, shard_tokens);

  uint64_t bytes = 0;
  for (const std::string& p : set.paths) bytes += fs::file_size(p);
  RunPass(set.paths);  // warm-up: page cache, index caches, allocator
  std::vector<double> open, index, dataset, cached, sampler, pack, end_to_end;
  PassTimes last;
  for (int r = 0; r < options.repeats; ++r) {
    last = RunPass(set.paths);
    if (last.packed_tokens != total_tokens) {
      Fail(absl::InternalError("an epoch did not pack every token exactly once"));
    }
    open.push_back(last.open_s);
    index.push_back(last.index_s);
    dataset.push_back(last.dataset_s);
    cached.push_back(last.cached_s);
    sampler.push_back(last.sampler_s);
    pack.push_back(last.pack_s);
    end_to_end.push_back(last.dataset_s + last.sampler_s + last.pack_s);
  }
  const DatasetOptions dataset_options{kByteVocabSize, kByteEndOfText, IndexCache::kReadOnly};
  const TokenDataset info = OrDie(TokenDataset::Open(set.paths, dataset_options));

  const double tokens = static_cast<double>(total_tokens);
  const double tokens_per_s = tokens / Median(end_to_end);
  const double pack_tokens_per_s = tokens / Median(pack);
  std::printf(
      "data path: %zu shards, %lld tokens (%.2f GiB), %lld documents, %s lengths, "
      "%lld-token global batches (%lld per epoch), sequences <= %lld tokens\n",
      set.paths.size(), static_cast<long long>(total_tokens),
      static_cast<double>(bytes) / (1 << 30), static_cast<long long>(info.num_documents()),
      kDistribution, static_cast<long long>(kTokensPerBatch), static_cast<long long>(last.batches),
      static_cast<long long>(kMaxSequenceLength));
  std::printf("shards: %s (%s)\n", set.folder.c_str(),
              set.reused ? "reused" : "generated this run");
  std::printf("%-36s %12s %16s\n", "stage (median, warm page cache)", "seconds", "tokens/s");
  auto row = [&](const char* name, const std::vector<double>& times) {
    std::printf("%-36s %12.4f %16.3e\n", name, Median(times), tokens / Median(times));
  };
  row("open: mmap + vocab check", open);
  row("index: EOT scan", index);
  row("dataset open (open + index)", dataset);
  row("dataset open from index cache", cached);
  row("sampler setup", sampler);
  row("sample + pack one epoch", pack);
  row("end to end (open..pack)", end_to_end);

  nlohmann::json result = {
      {"tokens_per_s", tokens_per_s},
      {"pack_tokens_per_s", pack_tokens_per_s},
      {"bytes", bytes},
      {"tokens", total_tokens},
      {"documents", info.num_documents()},
      {"shards", set.paths.size()},
      {"open_s", Median(open)},
      {"index_s", Median(index)},
      {"dataset_open_s", Median(dataset)},
      {"index_cached_open_s", Median(cached)},
      {"sampler_s", Median(sampler)},
      {"pack_s", Median(pack)},
      {"tokens_per_batch", kTokensPerBatch},
      {"batches_per_epoch", last.batches},
      {"distribution", kDistribution},
      {"generate_s", set.generate_s},
      {"reused", set.reused},
      {"repeats", options.repeats},
      {"quick", options.quick},
  };
  if (set.temporary) {
    std::error_code ec;
    fs::remove_all(set.folder, ec);
  }
  return result;
}

static Registrar reg("data", DataBench);

}  // namespace
}  // namespace loom::bench
