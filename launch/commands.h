// The `loom` subcommands. Each takes the arguments after its name and returns the process exit
// code: 0 on success, 1 when the work failed, 2 for bad usage; errors go to stderr.
#ifndef LOOM_LAUNCH_COMMANDS_H_
#define LOOM_LAUNCH_COMMANDS_H_

#include <string>
#include <vector>

namespace loom {

int TrainCommand(const std::vector<std::string>& args);
int PrepCommand(const std::vector<std::string>& args);
int EvalCommand(const std::vector<std::string>& args);
int InspectCommand(const std::vector<std::string>& args);
int PlanCommand(const std::vector<std::string>& args);
int SimulateCommand(const std::vector<std::string>& args);

}  // namespace loom

#endif  // LOOM_LAUNCH_COMMANDS_H_
