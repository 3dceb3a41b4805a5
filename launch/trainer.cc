#include "launch/trainer.h"

#include <cblas.h>
#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_format.h"
#include "launch/evaluate.h"
#include "launch/parallel_setup.h"
#include "launch/training_data.h"
#include "launch/world_layout.h"
#include "parallel/context_parallel_attention.h"
#include "parallel/plan_metrics.h"
#include "parallel/plan_validator.h"
#include "parallel/simulator.h"
#include "parallel/step_executor.h"
#include "runtime/run_ranks.h"
#include "src/atomic_file.h"
#include "src/grad_clip.h"
#include "src/status_macros.h"

namespace loom {
namespace fs = std::filesystem;
namespace {

// Kernel threads of one rank. runtime.threads is per process, so the threads of a local world
// share it. 0 means the cores this process may run on (its affinity mask, which mpirun
// --bind-to core and srun --cpu-bind narrow to the rank's own core), shared likewise by a local
// world's threads, or by the unbound processes of one host, which would otherwise each start a
// thread per core and oversubscribe it.
int RankThreads(int requested, const Communicator& comm) {
  const int local_ranks = comm.backend() == Backend::kLocal ? comm.size() : 1;
  if (requested > 0) return std::max(1, requested / local_ranks);
  const int online = static_cast<int>(std::max(sysconf(_SC_NPROCESSORS_ONLN), 1L));
  cpu_set_t set;
  CPU_ZERO(&set);
  const int allowed = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : online;
  int sharing = local_ranks;
  if (comm.backend() != Backend::kLocal && allowed >= online) {
    sharing = std::max(1, comm.world().local_size);
  }
  return std::max(1, allowed / sharing);
}

}  // namespace

absl::StatusOr<ExperimentConfig> LoadRunConfig(const std::string& run_dir) {
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) {
    return absl::NotFoundError(
        absl::StrFormat("--resume %s: no such run folder (the logging.run_dir of a run)", run_dir));
  }
  LOOM_ASSIGN_OR_RETURN(std::string ckpt, LatestCheckpoint(run_dir));
  LOOM_ASSIGN_OR_RETURN(ExperimentConfig config,
                        LoadExperimentConfig(ckpt + "/experiment.yaml", {}));
  config.logging.run_dir = run_dir;
  return config;
}

absl::StatusOr<bool> EveryRankOk(Communicator& comm, bool ok) {
  int32_t failed = ok ? 0 : 1;
  if (absl::Status s = comm.AllReduce(comm.world_group(), std::span<int32_t>(&failed, 1),
                                      ReduceOp::kMax);
      !s.ok()) {
    return s;
  }
  return failed == 0;
}

absl::Status RunTraining(const ExperimentConfig& config, bool resume,
                         const std::atomic<bool>* stop) {
  LOOM_ASSIGN_OR_RETURN(RuntimeConfig runtime, RuntimeConfigFromConfig(config));
  return RunRanks(runtime, [&](Communicator& comm) -> absl::Status {
    absl::StatusOr<std::unique_ptr<Trainer>> trainer =
        resume ? Trainer::Resume(config, comm) : Trainer::Create(config, comm);
    // Set-up fails alike or on one rank (rank 0 owns the run folder): either way every rank
    // learns it here instead of waiting for peers that have quit.
    absl::StatusOr<bool> all_ok = EveryRankOk(comm, trainer.ok());
    if (!trainer.ok()) return trainer.status();
    if (!all_ok.ok()) return all_ok.status();
    if (!*all_ok) return absl::OkStatus();  // the failing rank reports
    return (*trainer)->Run(stop);
  });
}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const ExperimentConfig& config,
                                                         Communicator& comm) {
  auto t = std::unique_ptr<Trainer>(new Trainer(config, comm));
  const std::string& run_dir = config.logging.run_dir;
  if (t->lead()) {
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
  }
  LOOM_RETURN_IF_ERROR(t->Open());
  t->model_->InitWeights(config.runtime.seed);
  // A fresh run starts a fresh metrics log.
  if (t->lead()) LOOM_RETURN_IF_ERROR(WriteFileAtomically(run_dir + "/metrics.jsonl", {""}));
  return t;
}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Resume(const ExperimentConfig& config,
                                                         Communicator& comm) {
  const std::string& run_dir = config.logging.run_dir;
  std::vector<std::string> damaged;
  LOOM_ASSIGN_OR_RETURN(std::string ckpt, LatestCheckpoint(run_dir, &damaged));
  if (comm.rank() == 0) {
    for (const std::string& why : damaged) {
      std::fprintf(stderr, "warning: skipping a damaged checkpoint: %s\n", why.c_str());
    }
  }
  auto t = std::unique_ptr<Trainer>(new Trainer(config, comm));
  LOOM_RETURN_IF_ERROR(t->Open());
  LOOM_RETURN_IF_ERROR(WithContext(
      ReadCheckpointWeights(ckpt, *t->model_),
      absl::StrFormat("resuming from %s: its weights do not fit the model its experiment.yaml "
                      "describes",
                      ckpt)));
  // Checkpoints hold the whole optimizer state; a sharded run keeps its own shard of it.
  AdamW full(t->model_->layout(), config.optimizer.adamw, &t->allocator_);
  LOOM_ASSIGN_OR_RETURN(TrainingState state,
                        ReadCheckpointState(ckpt, t->adamw_ ? *t->adamw_ : full));
  if (t->sharded_) LOOM_RETURN_IF_ERROR(t->sharded_->LoadState(full));
  if (state.threads != t->threads_ && t->lead()) {
    std::fprintf(stderr,
                 "warning: %s was written with %d threads per rank, resuming with %d: losses will "
                 "agree to rounding, not bit for bit\n",
                 ckpt.c_str(), state.threads, t->threads_);
  }
  LOOM_RETURN_IF_ERROR(t->sampler_->Restore(state.sampler));
  t->step_ = state.step;
  if (t->lead()) {
    std::printf("resuming %s at step %lld from %s\n", run_dir.c_str(),
                static_cast<long long>(state.step), ckpt.c_str());
  }
  return t;
}

absl::Status Trainer::Open() {
  const ExperimentConfig& c = config_;
  if (comm_.size() != c.parallel.world_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "parallel.world_size is %d but the launcher started %d rank%s (mpirun -np / srun -n must "
        "match it)",
        c.parallel.world_size, comm_.size(), comm_.size() == 1 ? "" : "s"));
  }
  threads_ = RankThreads(c.runtime.threads, comm_);
  omp_set_num_threads(threads_);
  openblas_set_num_threads(threads_);
  LOOM_ASSIGN_OR_RETURN(planner_, PlannerOptionsFromConfig(c));
  cost_ = CostModelFromConfig(c);
  LOOM_ASSIGN_OR_RETURN(model_, Model::Create(c.model, &allocator_));
  if (c.parallel.zero == 1) {
    LOOM_ASSIGN_OR_RETURN(sharded_, ShardedAdamW::Create(comm_, comm_.world_group(),
                                                         model_->layout(), c.optimizer.adamw,
                                                         &allocator_));
  } else {
    adamw_ = std::make_unique<AdamW>(model_->layout(), c.optimizer.adamw, &allocator_);
  }
  LOOM_ASSIGN_OR_RETURN(train_, OpenDataset(c.data.train, "data.train", c));
  if (!c.data.val.empty() && lead()) {
    LOOM_ASSIGN_OR_RETURN(val_, OpenDataset(c.data.val, "data.val", c));
  }
  LOOM_ASSIGN_OR_RETURN(BatchSampler sampler, TrainingSampler(*train_, c.data));
  sampler_ = std::make_unique<BatchSampler>(std::move(sampler));
  if (val_) {
    // Read once: every validation pass scores the same batches.
    val_batches_ = EvalBatches(*val_, EvalOptions{c.logging.val_tokens, c.data.max_doc_tokens,
                                                  c.data.tokens_per_step});
  }
  if (!lead()) return absl::OkStatus();
  return WithContext(
      WriteFileAtomically(c.logging.run_dir + "/config.yaml", {ExperimentConfigToYaml(c)}),
      absl::StrFormat("logging.run_dir %s is not writable", c.logging.run_dir));
}

double Trainer::ValidationLoss() {
  return Evaluate(*model_, val_batches_).mean_loss();
}

absl::Status Trainer::SaveCheckpoint() {
  std::unique_ptr<AdamW> gathered;
  if (sharded_) {
    gathered = std::make_unique<AdamW>(model_->layout(), config_.optimizer.adamw, &allocator_);
    LOOM_RETURN_IF_ERROR(sharded_->GatherState(*gathered));
  }
  if (!lead()) return absl::OkStatus();
  TrainingState state;
  state.step = step_;
  state.sampler = sampler_->position();
  state.threads = threads_;
  // A failed write removes its half-written folder; the older checkpoints stay resumable.
  return WithContext(
      WriteCheckpoint(config_.logging.run_dir, *model_, sharded_ ? *gathered : *adamw_, state,
                      config_, config_.checkpoint.keep_last)
          .status(),
      absl::StrFormat("writing the checkpoint of step %d (older checkpoints are kept)", step_));
}

absl::StatusOr<double> Trainer::Update(float lr) {
  if (sharded_) {
    return sharded_->Step(model_->params(), model_->grads(), lr, config_.optimizer.grad_clip);
  }
  const double norm =
      ClipGradNorm(model_->grads(), model_->num_params(), config_.optimizer.grad_clip);
  // As ShardedAdamW::Step: a NaN or infinite gradient leaves weights and moments untouched.
  if (std::isfinite(norm)) adamw_->Step(model_->params(), model_->grads(), lr);
  return norm;
}

absl::Status Trainer::Run(const std::atomic<bool>* stop) {
  const ExperimentConfig& c = config_;
  const int64_t total = c.schedule.total_steps;
  std::optional<MetricsLog> metrics;
  std::optional<ProgressLine> progress;
  LOOM_ASSIGN_OR_RETURN(const std::vector<RankPlacement> layout,
                        GatherWorldLayout(comm_, threads_));
  if (lead()) {
    std::fputs(FormatWorldLayout(layout, comm_).c_str(), stdout);
    LOOM_ASSIGN_OR_RETURN(MetricsLog log, MetricsLog::Open(c.logging.run_dir, step_));
    metrics.emplace(std::move(log));
    progress.emplace(step_, total);
    progress->Message(absl::StrFormat(
        "training %d parameters on %d documents (%d tokens), %d rank%s (%s backend, %s "
        "planner, C = %d tokens%s%s), %d thread%s per rank, steps %d..%d",
        model_->num_params(), train_->num_documents(), train_->num_tokens(), comm_.size(),
        comm_.size() == 1 ? "" : "s", c.runtime.backend, PlannerKindName(planner_.kind),
        planner_.capacity_tokens, sharded_ ? ", ZeRO-1" : "",
        c.parallel.pp > 1
            ? absl::StrFormat(", pipeline of %d stages x %d replicas, vpp %d, schedule %s",
                              c.parallel.pp, comm_.size() / c.parallel.pp, c.parallel.vpp,
                              c.parallel.pipeline_schedule)
            : "",
        threads_, threads_ == 1 ? "" : "s", step_ + 1, total));
  }
  PackedBatch packed;
  bool checkpoint_is_current = true;
  absl::Status deferred;  // a failure of rank 0's own work, told to the others at the next step
  absl::Status nonfinite;  // optimizer.on_nonfinite: stop, on every rank alike
  while (step_ < total) {
    // 0: go on; 1: a rank was asked to stop; 2: a rank failed.
    int32_t verdict = !deferred.ok() ? 2 : (stop != nullptr && stop->load()) ? 1 : 0;
    LOOM_RETURN_IF_ERROR(WithContext(
        comm_.AllReduce(comm_.world_group(), std::span<int32_t>(&verdict, 1), ReduceOp::kMax),
        absl::StrFormat("rank %d, step %d: agreeing to go on", comm_.rank(), step_ + 1)));
    if (verdict == 2) return deferred;  // OK on the ranks that did not fail
    if (verdict == 1) {
      if (progress) {
        progress->Message(absl::StrFormat("interrupted: writing a checkpoint at step %d", step_));
      }
      break;
    }
    const auto t0 = std::chrono::steady_clock::now();
    const SamplerPosition before_batch = sampler_->position();  // the last good state's
    const GlobalBatch batch = sampler_->Next();
    PackBatch(*train_, batch, &packed);
    const std::vector<SequenceSpec> sequences = SequencesOf(packed);
    const auto p0 = std::chrono::steady_clock::now();
    absl::StatusOr<StepPlan> plan = PlanStep(sequences, planner_, cost_);
    if (plan.ok()) {
      if (absl::Status s = ValidatePlan(*plan, cost_); !s.ok()) plan = s;
    }
    if (!plan.ok()) {
      return WithContext(plan.status(), absl::StrFormat("step %d: planning %d sequences",
                                                        step_ + 1, sequences.size()));
    }
    const double plan_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - p0).count();
    const float lr = c.schedule.At(step_);
    allocator_.ResetPeak();
    LOOM_ASSIGN_OR_RETURN(StepOutcome outcome,
                          ExecuteStep(comm_, *plan, packed, *model_,
                                      ExecutorOptions{.all_reduce_gradients = !sharded_}));
    // The loss and the gradient norm are the same bits on every rank (both are reduced over the
    // world), so every rank takes the same branch below without a word exchanged.
    const double loss = outcome.targets > 0 ? outcome.loss_sum / outcome.targets : 0.0;
    double grad_norm = std::nan("");  // unknown when the loss alone already rules the step out
    if (std::isfinite(loss)) {
      LOOM_ASSIGN_OR_RETURN(grad_norm, Update(lr));
    }
    const bool skipped = !std::isfinite(loss) || !std::isfinite(grad_norm);
    if (skipped && c.optimizer.on_nonfinite == "stop") {
      // The weights and moments are still those after step_; with the sampler back before this
      // batch, the checkpoint written below is the last good state.
      LOOM_RETURN_IF_ERROR(sampler_->Restore(before_batch));
      nonfinite = absl::DataLossError(absl::StrFormat(
          "step %d: non-finite loss (%g) or gradient norm (%g) on all ranks (both are reduced "
          "over the world); optimizer.on_nonfinite is stop: the update was not applied, and the "
          "checkpoint of step %d in %s/checkpoints holds the last good state",
          step_ + 1, loss, grad_norm, step_, c.logging.run_dir));
      break;
    }
    ++step_;
    checkpoint_is_current = false;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (lead() && deferred.ok()) {
      const PlanMetrics m = MeasurePlan(*plan, cost_);
      int max_micro_batches = 0;
      for (const RankLoad& r : m.ranks) max_micro_batches = std::max(max_micro_batches, r.micro_batches);
      nlohmann::json record = {{"step", step_},
                               {"loss", loss},
                               {"lr", lr},
                               {"grad_norm", grad_norm},
                               {"tokens", batch.num_tokens},
                               {"sequences", batch.sequences.size()},
                               {"step_s", seconds},
                               {"plan_s", plan_s},
                               {"tokens_per_s", batch.num_tokens / seconds},
                               {"peak_mem_bytes", allocator_.peak_bytes()},
                               {"balance", m.balance()},
                               {"max_micro_batches", max_micro_batches},
                               {"rings", m.rings},
                               {"largest_ring", m.largest_ring},
                               {"chunks", m.chunks},
                               {"ring_bytes_per_rank", m.mean_ring_bytes_sent}};
      if (!plan->stages.empty()) {
        // The schedule this step ran, and its bubble as the planner's cost model sees it.
        record["schedule"] = plan->schedule;
        if (absl::StatusOr<SimResult> sim = SimulateStep(*plan, cost_); sim.ok()) {
          record["bubble"] = sim->bubble_fraction();
        }
      }
      if (skipped) {
        // JSON has no NaN or infinity: nlohmann writes them as null.
        record["skipped"] = true;
        progress->Message(absl::StrFormat(
            "step %d: non-finite loss (%g) or gradient norm (%g) on all ranks: update skipped "
            "(optimizer.on_nonfinite: skip)",
            step_, loss, grad_norm));
      }
      if (val_ && c.logging.val_every > 0 &&
          (step_ % c.logging.val_every == 0 || step_ == total)) {
        const double val_loss = ValidationLoss();
        record["val_loss"] = val_loss;
        progress->Message(absl::StrFormat("step %d: val_loss %.4f", step_, val_loss));
      }
      deferred = metrics->Append(record);
      if (step_ % std::max<int64_t>(c.logging.log_every, 1) == 0 || step_ == total) {
        const std::string mesh =
            comm_.size() == 1 ? ""
                              : absl::StrFormat("  balance %.3f  rings %d (largest %d)",
                                                m.balance(), m.rings, m.largest_ring);
        progress->Update(step_, loss, lr, batch.num_tokens / seconds, mesh);
      }
    }
    if (c.checkpoint.every > 0 && step_ % c.checkpoint.every == 0 && step_ < total) {
      if (absl::Status s = SaveCheckpoint(); !s.ok() && deferred.ok()) deferred = s;
      checkpoint_is_current = true;
    }
  }
  if (progress) progress->Finish();
  // Every rank takes part in the last checkpoint (a sharded state is gathered), so all decide
  // alike: rank 0, which alone knows whether it failed or a checkpoint exists, tells the others
  // (2: it failed; 1: a checkpoint is needed).
  int32_t verdict = !deferred.ok() ? 2
                    : lead() && (!checkpoint_is_current || !LatestCheckpoint(c.logging.run_dir).ok())
                        ? 1
                        : 0;
  LOOM_RETURN_IF_ERROR(
      comm_.AllReduce(comm_.world_group(), std::span<int32_t>(&verdict, 1), ReduceOp::kMax));
  if (verdict == 2) return deferred;
  if (verdict == 1) LOOM_RETURN_IF_ERROR(SaveCheckpoint());
  if (!nonfinite.ok()) return lead() ? nonfinite : absl::OkStatus();  // rank 0 reports, once
  if (lead()) {
    std::printf("checkpoint at step %lld in %s/checkpoints\n", static_cast<long long>(step_),
                c.logging.run_dir.c_str());
  }
  return absl::OkStatus();
}

}  // namespace loom
