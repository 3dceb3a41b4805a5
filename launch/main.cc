// loom: train transformer language models on long, variable-length sequences.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "launch/commands.h"

namespace {

constexpr char kUsage[] =
    "usage: loom COMMAND [flags]\n"
    "\n"
    "commands:\n"
    "  train    --config FILE [key.path=value ...] | --resume RUN_DIR\n"
    "           train a model; metrics, checkpoints and the resolved config go to the run folder\n"
    "  prep     --input PATH --output DIR [--shard-tokens N] [--val-fraction F]\n"
    "           text files (one document each) or JSONL with a \"text\" field -> token shards\n"
    "  eval     --checkpoint DIR --data SHARDS [--tokens N]\n"
    "           mean token loss of a checkpoint on data (JSON on the last line)\n"
    "  inspect  PATH\n"
    "           a shard (tokens, documents, length histogram) or a checkpoint (tensors, step)\n"
    "  plan     --config FILE [--steps N] --out DIR [key.path=value ...]\n"
    "           plan the first N steps' batches: figures per step, plan JSON, Chrome traces\n"
    "  simulate --config FILE [--out DIR] [section.key=value ...]\n"
    "           time strategies on a simulated cluster (configs/sim/): step time, MFU, memory\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "train") return loom::TrainCommand(args);
  if (command == "prep") return loom::PrepCommand(args);
  if (command == "eval") return loom::EvalCommand(args);
  if (command == "inspect") return loom::InspectCommand(args);
  if (command == "plan") return loom::PlanCommand(args);
  if (command == "simulate") return loom::SimulateCommand(args);
  std::fprintf(stderr, "loom: unknown command '%s'\n\n%s", command.c_str(), kUsage);
  return 2;
}
