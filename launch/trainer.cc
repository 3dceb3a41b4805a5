#include "launch/trainer.h"

#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_format.h"
#include "launch/evaluate.h"
#include "parallel/batch_conversion.h"
#include "src/atomic_file.h"
#include "src/grad_clip.h"
#include "src/status_macros.h"

namespace loom {
namespace fs = std::filesystem;
namespace {

int ResolveThreads(int requested) {
  if (requested > 0) return requested;
  const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  return cores > 0 ? static_cast<int>(cores) : 1;
}

absl::StatusOr<std::unique_ptr<TokenDataset>> OpenDataset(const std::string& spec,
                                                          const std::string& field,
                                                          const ExperimentConfig& c) {
  LOOM_ASSIGN_OR_RETURN(std::vector<std::string> paths, ResolveShards(spec, field));
  DatasetOptions options;
  options.vocab_size = c.model.vocab_size;
  options.eot_token = static_cast<uint32_t>(c.data.eot_token);
  absl::StatusOr<TokenDataset> ds = TokenDataset::Open(paths, options);
  if (!ds.ok()) {
    return absl::Status(ds.status().code(), absl::StrFormat("%s: %s", field, ds.status().message()));
  }
  return std::make_unique<TokenDataset>(std::move(ds).value());
}

BatchSamplerConfig SamplerConfig(const DataConfig& d) {
  BatchSamplerConfig s;
  s.tokens_per_batch = d.tokens_per_step;
  s.max_sequence_length = d.max_doc_tokens;
  s.oversize = d.long_docs == "reject" ? OversizePolicy::kReject : OversizePolicy::kSplit;
  s.seed = d.seed;
  return s;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ResolveShards(const std::string& spec,
                                                       const std::string& field) {
  std::error_code ec;
  if (spec.empty()) return absl::InvalidArgumentError(absl::StrFormat("%s is empty", field));
  std::vector<std::string> paths;
  if (fs::is_regular_file(spec, ec)) {
    paths.push_back(spec);
  } else if (fs::is_directory(spec, ec)) {
    for (const auto& e : fs::directory_iterator(spec, ec)) {
      if (e.is_regular_file() && e.path().extension() == ".bin") paths.push_back(e.path().string());
    }
    std::sort(paths.begin(), paths.end());
  } else {
    const fs::path p(spec);
    absl::StatusOr<std::vector<std::string>> listed =
        ListShards(p.parent_path().empty() ? "." : p.parent_path().string(),
                   p.filename().string());
    if (listed.ok()) paths = *listed;
  }
  if (paths.empty()) {
    return absl::NotFoundError(absl::StrFormat(
        "%s: '%s' names no shard (a .bin file, a folder of .bin files, or a prefix DIR/NAME of "
        "DIR/NAME_*.bin); run `loom prep` first?",
        field, spec));
  }
  return paths;
}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const ExperimentConfig& config) {
  auto t = std::unique_ptr<Trainer>(new Trainer());
  t->config_ = config;
  const std::string& run_dir = config.logging.run_dir;
  if (LatestCheckpoint(run_dir).ok()) {
    return absl::AlreadyExistsError(absl::StrFormat(
        "%s already holds checkpoints: continue it with `loom train --resume %s`, or choose "
        "another logging.run_dir",
        run_dir, run_dir));
  }
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrFormat("logging.run_dir: cannot create %s: %s", run_dir, ec.message()));
  }
  LOOM_RETURN_IF_ERROR(t->Open());
  t->model_->InitWeights(config.runtime.seed);
  // A fresh run starts a fresh metrics log.
  LOOM_RETURN_IF_ERROR(WriteFileAtomically(run_dir + "/metrics.jsonl", {""}));
  return t;
}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Resume(const std::string& run_dir) {
  LOOM_ASSIGN_OR_RETURN(std::string ckpt, LatestCheckpoint(run_dir));
  LOOM_ASSIGN_OR_RETURN(ExperimentConfig config,
                        LoadExperimentConfig(ckpt + "/experiment.yaml", {}));
  config.logging.run_dir = run_dir;  // the run may have been moved
  auto t = std::unique_ptr<Trainer>(new Trainer());
  t->config_ = config;
  LOOM_RETURN_IF_ERROR(t->Open());
  LOOM_RETURN_IF_ERROR(ReadCheckpointWeights(ckpt, *t->model_));
  LOOM_ASSIGN_OR_RETURN(TrainingState state, ReadCheckpointState(ckpt, *t->adamw_));
  if (state.threads != t->threads_) {
    std::fprintf(stderr,
                 "warning: %s was written with %d threads, resuming with %d: losses will agree "
                 "to rounding, not bit for bit\n",
                 ckpt.c_str(), state.threads, t->threads_);
  }
  LOOM_RETURN_IF_ERROR(t->sampler_->Restore(state.sampler));
  t->step_ = state.step;
  std::printf("resuming %s at step %lld from %s\n", run_dir.c_str(),
              static_cast<long long>(state.step), ckpt.c_str());
  return t;
}

absl::Status Trainer::Open() {
  const ExperimentConfig& c = config_;
  threads_ = ResolveThreads(c.runtime.threads);
  omp_set_num_threads(threads_);
  openblas_set_num_threads(threads_);
  LOOM_ASSIGN_OR_RETURN(model_, Model::Create(c.model));
  adamw_ = std::make_unique<AdamW>(model_->layout(), c.optimizer.adamw);
  LOOM_ASSIGN_OR_RETURN(train_, OpenDataset(c.data.train, "data.train", c));
  if (!c.data.val.empty()) {
    LOOM_ASSIGN_OR_RETURN(val_, OpenDataset(c.data.val, "data.val", c));
  }
  const std::vector<int64_t> lengths = train_->DocumentLengths();
  absl::StatusOr<BatchSampler> sampler = BatchSampler::Create(
      lengths, SamplerConfig(c.data),
      [this](int64_t d) { return train_->DescribeDocument(d); });
  if (!sampler.ok()) {
    return absl::Status(sampler.status().code(),
                        absl::StrFormat("data.train: %s", sampler.status().message()));
  }
  sampler_ = std::make_unique<BatchSampler>(std::move(sampler).value());
  if (val_) {
    // Read once: every validation pass scores the same batches.
    val_batches_ = EvalBatches(*val_, EvalOptions{c.logging.val_tokens, c.data.max_doc_tokens,
                                                  c.data.tokens_per_step});
  }
  return WriteFileAtomically(c.logging.run_dir + "/config.yaml", {ExperimentConfigToYaml(c)});
}

double Trainer::ValidationLoss() {
  return Evaluate(*model_, val_batches_).mean_loss();
}

absl::Status Trainer::SaveCheckpoint() {
  TrainingState state;
  state.step = step_;
  state.sampler = sampler_->position();
  state.threads = threads_;
  return WriteCheckpoint(config_.logging.run_dir, *model_, *adamw_, state, config_,
                         config_.checkpoint.keep_last)
      .status();
}

absl::Status Trainer::Run(const std::atomic<bool>* stop) {
  const ExperimentConfig& c = config_;
  const int64_t total = c.schedule.total_steps;
  LOOM_ASSIGN_OR_RETURN(MetricsLog metrics, MetricsLog::Open(c.logging.run_dir, step_));
  ProgressLine progress(step_, total);
  progress.Message(absl::StrFormat(
      "training %d parameters on %d documents (%d tokens), %d threads, steps %d..%d",
      model_->num_params(), train_->num_documents(), train_->num_tokens(), threads_, step_ + 1,
      total));
  Allocator& alloc = *model_->allocator();
  PackedBatch packed;
  bool checkpoint_is_current = true;
  while (step_ < total) {
    if (stop != nullptr && stop->load()) {
      progress.Message(absl::StrFormat("interrupted: writing a checkpoint at step %d", step_));
      break;
    }
    const auto t0 = std::chrono::steady_clock::now();
    const GlobalBatch batch = sampler_->Next();
    PackBatch(*train_, batch, &packed);
    const TokenBatch tb = ToTokenBatch(packed);
    const float lr = c.schedule.At(step_);
    alloc.ResetPeak();
    model_->ZeroGrads();
    const float scale = packed.num_targets > 0 ? 1.0f / static_cast<float>(packed.num_targets) : 0;
    const double loss_sum = model_->ForwardBackward(tb, scale);
    const double grad_norm =
        ClipGradNorm(model_->grads(), model_->num_params(), c.optimizer.grad_clip);
    adamw_->Step(model_->params(), model_->grads(), lr);
    ++step_;
    checkpoint_is_current = false;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double loss = packed.num_targets > 0 ? loss_sum / packed.num_targets : 0.0;
    nlohmann::json record = {{"step", step_},
                             {"loss", loss},
                             {"lr", lr},
                             {"grad_norm", grad_norm},
                             {"tokens", batch.num_tokens},
                             {"sequences", batch.sequences.size()},
                             {"step_s", seconds},
                             {"tokens_per_s", batch.num_tokens / seconds},
                             {"peak_mem_bytes", alloc.peak_bytes()}};
    if (val_ && c.logging.val_every > 0 && (step_ % c.logging.val_every == 0 || step_ == total)) {
      const double val_loss = ValidationLoss();
      record["val_loss"] = val_loss;
      progress.Message(absl::StrFormat("step %d: val_loss %.4f", step_, val_loss));
    }
    LOOM_RETURN_IF_ERROR(metrics.Append(record));
    if (step_ % std::max<int64_t>(c.logging.log_every, 1) == 0 || step_ == total) {
      progress.Update(step_, loss, lr, batch.num_tokens / seconds);
    }
    if (c.checkpoint.every > 0 && step_ % c.checkpoint.every == 0 && step_ < total) {
      LOOM_RETURN_IF_ERROR(SaveCheckpoint());
      checkpoint_is_current = true;
    }
  }
  progress.Finish();
  if (!checkpoint_is_current || !LatestCheckpoint(c.logging.run_dir).ok()) {
    LOOM_RETURN_IF_ERROR(SaveCheckpoint());
  }
  std::printf("checkpoint at step %lld in %s/checkpoints\n", static_cast<long long>(step_),
              c.logging.run_dir.c_str());
  return absl::OkStatus();
}

}  // namespace loom
