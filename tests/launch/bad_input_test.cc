// Bad input through the real `loom` program: every case must stop with its exit code (2: the
// command line or the experiment file; 1: what the run met: data, checkpoints, the launcher) and
// a message holding the given text, never crash or hang. docs/errors.md lists the same cases with
// what to do about each.
#include <gtest/gtest.h>

#include "absl/strings/str_replace.h"
#include "launch/checkpoint.h"
#include "tests/launch/launch_test_util.h"
#ifdef LOOM_HAVE_CUDA
#include "src/cuda/cuda_device.h"
#endif

namespace loom {
namespace {
using namespace loom::testing_util;

struct Case {
  const char* name;
  // After `loom ` (or a whole command when it starts with "!"); {root} is the fixture's folder,
  // {exp} a good experiment file in it.
  std::string args;
  int exit_code;
  std::string message;  // must appear in the output; {root} as above
};

// A shard header (llm.c layout: 256 int32) with `tokens` uint16 tokens after it.
void WriteShard(const fs::path& path, int32_t magic, int32_t count, std::vector<uint16_t> tokens) {
  std::vector<int32_t> header(256, 0);
  header[0] = magic;
  header[1] = 1;
  header[2] = count;
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header.data()), 1024);
  out.write(reinterpret_cast<const char*>(tokens.data()),
            static_cast<std::streamsize>(tokens.size() * 2));
}

// Rewrites a checkpoint's manifest after a deliberate edit, as loom would have written it, so the
// edit is what is tested rather than the checksum.
void Reseal(const fs::path& dir) {
  std::ifstream in(dir / "manifest.json");
  nlohmann::json manifest = nlohmann::json::parse(in);
  for (auto it = manifest["files"].begin(); it != manifest["files"].end(); ++it) {
    std::ifstream f(dir / it.key(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    uint64_t h = 1469598103934665603ull;  // FNV-1a 64, as launch/checkpoint.cc
    for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
    (*it)["bytes"] = bytes.size();
    (*it)["fnv1a64"] = absl::StrFormat("%016x", h);
  }
  std::ofstream(dir / "manifest.json") << manifest.dump(2) << "\n";
}

void Edit(const fs::path& path, const std::string& from, const std::string& to) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_NE(text.find(from), std::string::npos) << path << " has no '" << from << "'";
  text = absl::StrReplaceAll(text, {{from, to}});
  std::ofstream(path) << text;
}

class BadInputTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new ScratchDir("loom_bad_input");
    const fs::path& root = scratch_->path();
    ASSERT_TRUE(PrepareCorpus(root, 20));
    // The cases' runs go to "fresh", which never gets a checkpoint; one good run goes to "run".
    ExperimentConfig c = TinyConfig(root, "fresh");
    c.schedule.total_steps = 2;
    WriteConfig(root / "exp.yaml", c);
    const Result run = RunShell(kLoom + " train --config " + (root / "exp.yaml").string() +
                                " logging.run_dir=" + (root / "run").string());
    ASSERT_EQ(run.exit_code, 0) << run.output;

    std::ofstream(root / "syntax.yaml") << "model: {d_model: 32\n";
    std::ofstream(root / "list.yaml") << "- model\n- data\n";
    std::ofstream(root / "section.yaml") << "modle:\n  d_model: 32\ndata: {train: x}\n";
    std::ofstream(root / "duplicate.yaml") << "data: {train: x}\nmodel:\n  d_model: 32\n"
                                              "  d_model: 64\n";
    std::ofstream(root / "no_train.yaml") << "model: {d_model: 32}\n";
    std::ofstream(root / "empty.bin");
    WriteShard(root / "magic.bin", 1234, 3, {1, 2, 256});
    WriteShard(root / "short.bin", 20240520, 10, {1, 2, 256});
    WriteShard(root / "no_tokens.bin", 20240520, 0, {});
    WriteShard(root / "vocab.bin", 20240520, 4, {1, 300, 2, 256});
    fs::create_directories(root / "no_shards");
    fs::create_directories(root / "no_checkpoint");

    // The checkpoint's experiment asks for a wider model than its weights hold.
    const fs::path ckpt = root / "run" / "checkpoints" / "step-00000002";
    fs::copy(root / "run", root / "wider_run", fs::copy_options::recursive);
    const fs::path wider = root / "wider_run" / "checkpoints" / "step-00000002";
    Edit(wider / "experiment.yaml", "d_model: 32", "d_model: 64");
    Reseal(wider);
    // Its Hugging Face config.json says more layers than its weights have.
    fs::copy(ckpt, root / "deeper_ckpt", fs::copy_options::recursive);
    Edit(root / "deeper_ckpt" / "config.json", "\"num_hidden_layers\": 2",
         "\"num_hidden_layers\": 3");
    Reseal(root / "deeper_ckpt");
  }
  static void TearDownTestSuite() { delete scratch_; }

  static std::string Expand(const std::string& text) {
    const std::string root = scratch_->path().string();
    return absl::StrReplaceAll(text, {{"{root}", root}, {"{exp}", root + "/exp.yaml"}});
  }

  static ScratchDir* scratch_;
};
ScratchDir* BadInputTest::scratch_ = nullptr;

TEST_F(BadInputTest, EachCaseGivesItsExitCodeAndMessage) {
  const std::string train = "train --config {exp} ";
  std::vector<Case> cases = {
      // The command line.
      {"unknown command", "trian", 2, "unknown command 'trian'"},
      {"no config", "train", 2, "loom train: --config is required"},
      {"unknown flag", "train --confg x", 2, "unknown flag --confg (see `loom train --help`)"},
      {"resume with overrides", "train --resume {root}/run model.n_heads=2", 2,
       "--resume continues with the run's saved config; it takes no --config or overrides"},
      {"missing config file", "train --config {root}/none.yaml", 2,
       "cannot open {root}/none.yaml: No such file or directory"},
      {"config is a folder", "train --config {root}", 2, "cannot read {root}: Is a directory"},
      // The experiment file and overrides.
      {"malformed YAML", "train --config {root}/syntax.yaml", 2,
       "{root}/syntax.yaml:2: invalid YAML: "},
      {"not a map", "train --config {root}/list.yaml", 2,
       "{root}/list.yaml:1: expected a map of sections"},
      {"unknown section", "train --config {root}/section.yaml", 2,
       "{root}/section.yaml:1: modle: unknown section; did you mean 'model'?"},
      {"duplicate key", "train --config {root}/duplicate.yaml", 2,
       "{root}/duplicate.yaml:4: model.d_model: duplicate key"},
      {"missing data.train", "train --config {root}/no_train.yaml", 2,
       "data.train: required but not given"},
      {"unknown key", train + "model.n_headz=4", 2,
       "override 'model.n_headz=4': model.n_headz: unknown key; did you mean 'n_heads'?"},
      {"override without =", train + "model.n_heads", 2,
       "override 'model.n_heads': expected section.key=value"},
      {"word for an integer", train + "model.n_heads=eight", 2,
       "model.n_heads: expected an integer, got 'eight'"},
      {"fraction for an integer", train + "model.d_model=32.5", 2,
       "model.d_model: expected an integer, got '32.5'"},
      {"quoted number", train + "'model.n_heads=\"8\"'", 2,
       "model.n_heads: expected an integer, got the quoted string \"8\""},
      {"yes for a bool", train + "model.tied_embeddings=yes", 2,
       "model.tied_embeddings: expected true or false, got 'yes'"},
      {"NaN for a float", train + "optimizer.grad_clip=nan", 2,
       "optimizer.grad_clip: expected a finite number, got 'nan'"},
      {"beta out of range", train + "optimizer.beta1=1.5", 2,
       "optimizer.beta1: must be in [0, 1), got 1.5"},
      {"unknown on_nonfinite", train + "optimizer.on_nonfinite=ignore", 2,
       "optimizer.on_nonfinite: must be one of skip|stop, got 'ignore'"},
      {"world size 0", train + "parallel.world_size=0", 2,
       "parallel.world_size: must be positive, got 0"},
      {"negative capacity", train + "parallel.capacity_tokens=-1", 2,
       "parallel.capacity_tokens: must be >= 0, got -1"},
      {"cp_size not dividing world_size",
       train + "parallel.planner=static parallel.world_size=4 parallel.cp_size=3", 2,
       "parallel.cp_size: 3 does not divide parallel.world_size (4)"},
      {"pp not dividing world_size", train + "parallel.world_size=4 parallel.pp=3", 2,
       "parallel.pp: 3 does not divide parallel.world_size (4): the world is pp x replicas"},
      {"more stages than layers", train + "parallel.world_size=4 parallel.pp=4", 2,
       "parallel.pp: pp x vpp = 4 stages but model.n_layers is 2: every stage needs a layer"},
      {"vpp without a pipeline", train + "parallel.vpp=2", 2,
       "parallel.vpp: 2 model chunks per rank need a pipeline (parallel.pp >= 2)"},
      {"interleaved with one chunk",
       train + "parallel.world_size=2 parallel.pp=2 parallel.pipeline_schedule=interleaved", 2,
       "parallel.pipeline_schedule: interleaved needs parallel.vpp >= 2"},
      {"unknown pipeline schedule", train + "parallel.pipeline_schedule=zb-v", 2,
       "parallel.pipeline_schedule: must be one of auto|gpipe|1f1b|interleaved|zb-h1, got "
       "'zb-v'"},
      {"ZeRO stage 2", train + "parallel.zero=2", 2,
       "parallel.zero: must be 0 or 1 (ZeRO stage 1), got 2"},
      {"unknown planner", train + "parallel.planner=ring", 2,
       "parallel.planner: must be one of hdp|naive_hdp|static|chunkflow, got 'ring'"},
      {"unknown backend", train + "runtime.backend=gloo", 2,
       "runtime.backend: must be one of local|mpi|nccl, got 'gloo'"},
      {"timeout 0", train + "runtime.timeout_s=0", 2, "runtime.timeout_s: must be positive, got 0"},
      {"head size", train + "model.d_model=30", 2,
       "override 'model.d_model=30': model.d_model (30) must be divisible by model.n_heads (4)"},
      {"min_lr above max_lr", train + "schedule.min_lr=1 schedule.max_lr=0.1", 2,
       "override 'schedule.min_lr=1': schedule: need 0 <= min_lr <= max_lr"},
      {"end-of-text outside the vocabulary", train + "data.eot_token=300", 2,
       "data.eot_token (300) must be below model.vocab_size (257)"},
      {"token budget 0", train + "data.tokens_per_step=0", 2,
       "data.tokens_per_step: must be positive, got 0"},
      // Planner settings that only make sense together.
      {"world cannot hold the longest sequence",
       train + "parallel.world_size=2 parallel.capacity_tokens=16", 1,
       "parallel.capacity_tokens: 2 ranks x 16 tokens cannot hold a sequence of "
       "data.max_doc_tokens (256)"},
      {"chunk_size with the static planner",
       train + "parallel.planner=static parallel.chunk_size=64",
       1, "parallel.chunk_size is for parallel.planner hdp"},
      {"chunk_size above capacity", train + "parallel.chunk_size=512", 1,
       "parallel.chunk_size (512) must not exceed parallel.capacity_tokens (256)"},
      {"static mesh too small for a sequence",
       train + "parallel.planner=static parallel.world_size=4 parallel.capacity_tokens=64 "
               "parallel.cp_size=1 logging.run_dir={root}/static",
       1,
       "step 1: planning 4 sequences: sequence 0 (index 0) has 256 tokens, more than a "
       "micro-batch of the static mesh holds (cp_size 1 x capacity 64 tokens)"},
      // Data.
      {"missing shard", train + "data.train={root}/none.bin", 1,
       "data.train: '{root}/none.bin' names no shard"},
      {"folder without shards", train + "data.train={root}/no_shards", 1,
       "data.train: '{root}/no_shards' names no shard"},
      {"empty file", train + "data.train={root}/empty.bin", 1,
       "shard {root}/empty.bin: truncated header: the file ends at offset 0"},
      {"wrong magic", train + "data.train={root}/magic.bin", 1,
       "shard {root}/magic.bin: offset 0: magic 1234 is not a token shard's"},
      {"shard shorter than its header says", train + "data.train={root}/short.bin", 1,
       "the header promises 10 uint16 tokens (1044 bytes in all) but the file has 1030 bytes"},
      {"shard without tokens", train + "data.train={root}/no_tokens.bin", 1,
       "data.train: no tokens in '{root}/no_tokens.bin': every shard is empty"},
      {"token id over the vocabulary", train + "data.train={root}/vocab.bin", 1,
       "token 300 (index 1) is not below the vocab size 257"},
      {"document longer than allowed",
       train + "data.long_docs=reject data.max_doc_tokens=64", 1,
       "tokens, more than max_sequence_length 64 (oversize policy: reject)"},
      // Launchers.
      {"mpi backend without mpirun", train + "runtime.backend=mpi parallel.world_size=4", 1,
       "parallel.world_size is 4 but the launcher started 1 rank (mpirun -np / srun -n must "
       "match it)"},
      {"mpirun -np 2 for 4 ranks",
       "!" + kMpiEnv + kRepo + "/launch/mpirun.sh -np 2 " + train + "parallel.world_size=4", 1,
       "parallel.world_size is 4 but the launcher started 2 ranks (mpirun -np / srun -n must "
       "match it)"},
      // Run folders and checkpoints.
      {"resume a folder that does not exist", "train --resume {root}/none", 2,
       "--resume {root}/none: no such run folder"},
      {"resume without checkpoints", "train --resume {root}/no_checkpoint", 2,
       "no complete checkpoint in {root}/no_checkpoint/checkpoints"},
      {"new run in a finished run's folder", train + "logging.run_dir={root}/run", 1,
       "{root}/run already holds checkpoints: continue it with `loom train --resume {root}/run`"},
      {"resume with a different model shape", "train --resume {root}/wider_run", 1,
       "its weights do not fit the model its experiment.yaml describes: "
       "{root}/wider_run/checkpoints/step-00000002/model.safetensors: tensor "
       "'model.embed_tokens.weight' has shape [257, 32], expected [257, 64]"},
      {"eval a checkpoint whose config.json disagrees with its weights",
       "eval --checkpoint {root}/deeper_ckpt --data {root}/data/train", 1,
       "{root}/deeper_ckpt: its weights do not fit the model its config.json describes: "
       "{root}/deeper_ckpt/model.safetensors: no tensor 'model.layers.2.input_layernorm.weight'"},
      {"eval a missing checkpoint", "eval --checkpoint {root}/none --data {root}/data/train", 1,
       "--checkpoint {root}/none: no such folder"},
      {"eval missing data",
       "eval --checkpoint {root}/run/checkpoints/step-00000002 --data {root}/none", 1,
       "--data: '{root}/none' names no shard"},
  };
  // The nccl backend: a clear refusal on a machine without a GPU or in a build without NCCL.
#ifdef LOOM_HAVE_NCCL
  const absl::StatusOr<int> gpus = CudaDeviceCount();
  if (gpus.ok() && *gpus == 0) {
    cases.push_back({"nccl without a GPU", train + "runtime.backend=nccl", 1,
                     "runtime.backend: nccl needs a GPU per rank and this machine shows none"});
  }
#else
  cases.push_back({"nccl not in this build", train + "runtime.backend=nccl", 1,
                   "runtime.backend: this build has no 'nccl' backend"});
#endif
  ASSERT_GE(cases.size(), 30u);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string command = c.args[0] == '!' ? "env " + Expand(c.args.substr(1))
                                                 : kLoom + " " + Expand(c.args);
    const Result r = RunShell("timeout 60 " + command);
    EXPECT_EQ(r.exit_code, c.exit_code) << command << "\n" << r.output;
    EXPECT_NE(r.output.find(Expand(c.message)), std::string::npos) << command << "\n" << r.output;
    EXPECT_EQ(r.output.find("Segmentation fault"), std::string::npos) << r.output;
  }
}

}  // namespace
}  // namespace loom
