// World discovery from launcher environments.
#include "runtime/world.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "absl/strings/match.h"

namespace loom {
namespace {

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](absl::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(DetectWorld, OpenMpi) {
  absl::StatusOr<WorldInfo> world = DetectWorld(FakeEnv({{"OMPI_COMM_WORLD_RANK", "5"},
                                                         {"OMPI_COMM_WORLD_SIZE", "8"},
                                                         {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                                         {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}}));
  ASSERT_TRUE(world.ok()) << world.status();
  EXPECT_EQ(world->rank, 5);
  EXPECT_EQ(world->size, 8);
  EXPECT_EQ(world->local_rank, 1);
  EXPECT_EQ(world->local_size, 4);
  EXPECT_EQ(world->node, -1) << "Open MPI does not say; communicators work it out";
  EXPECT_EQ(world->source, "openmpi");
  EXPECT_EQ(world->hostname, HostName());
}

TEST(DetectWorld, SlurmJobStep) {
  absl::StatusOr<WorldInfo> world = DetectWorld(FakeEnv({{"SLURM_PROCID", "13"},
                                                         {"SLURM_STEP_NUM_TASKS", "16"},
                                                         {"SLURM_LOCALID", "5"},
                                                         {"SLURM_NODEID", "1"},
                                                         {"SLURM_STEP_NUM_NODES", "2"},
                                                         {"SLURM_NTASKS", "32"}}));
  ASSERT_TRUE(world.ok()) << world.status();
  EXPECT_EQ(world->rank, 13);
  EXPECT_EQ(world->size, 16);
  EXPECT_EQ(world->local_rank, 5);
  EXPECT_EQ(world->local_size, -1);
  EXPECT_EQ(world->node, 1);
  EXPECT_EQ(world->num_nodes, 2);
  EXPECT_EQ(world->source, "slurm");
}

TEST(DetectWorld, SlurmBatchScriptWithoutStepIsASingleton) {
  absl::StatusOr<WorldInfo> world =
      DetectWorld(FakeEnv({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "64"}}));
  ASSERT_TRUE(world.ok()) << world.status();
  EXPECT_EQ(world->size, 1);
  EXPECT_EQ(world->source, "singleton");
}

TEST(DetectWorld, Pmi) {
  absl::StatusOr<WorldInfo> world = DetectWorld(FakeEnv(
      {{"PMI_RANK", "2"}, {"PMI_SIZE", "3"}, {"MPI_LOCALRANKID", "0"}, {"MPI_LOCALNRANKS", "1"}}));
  ASSERT_TRUE(world.ok()) << world.status();
  EXPECT_EQ(world->rank, 2);
  EXPECT_EQ(world->size, 3);
  EXPECT_EQ(world->local_rank, 0);
  EXPECT_EQ(world->local_size, 1);
  EXPECT_EQ(world->source, "pmi");
}

TEST(DetectWorld, MpirunInsideASlurmAllocationFollowsMpirun) {
  absl::StatusOr<WorldInfo> world = DetectWorld(FakeEnv({{"OMPI_COMM_WORLD_RANK", "3"},
                                                         {"OMPI_COMM_WORLD_SIZE", "4"},
                                                         {"SLURM_PROCID", "0"},
                                                         {"SLURM_STEP_NUM_TASKS", "1"}}));
  ASSERT_TRUE(world.ok()) << world.status();
  EXPECT_EQ(world->rank, 3);
  EXPECT_EQ(world->size, 4);
  EXPECT_EQ(world->source, "openmpi");
}

TEST(DetectWorld, Singleton) {
  absl::StatusOr<WorldInfo> world = DetectWorld(FakeEnv({}));
  ASSERT_TRUE(world.ok()) << world.status();
  EXPECT_EQ(world->rank, 0);
  EXPECT_EQ(world->size, 1);
  EXPECT_EQ(world->local_rank, 0);
  EXPECT_EQ(world->local_size, 1);
  EXPECT_EQ(world->node, 0);
  EXPECT_EQ(world->num_nodes, 1);
  EXPECT_EQ(world->source, "singleton");
}

TEST(DetectWorld, MalformedValuesAreErrorsNamingTheVariable) {
  struct Case {
    std::map<std::string, std::string> env;
    std::string mentions;
  };
  const Case cases[] = {
      {{{"OMPI_COMM_WORLD_RANK", "x"}, {"OMPI_COMM_WORLD_SIZE", "2"}}, "OMPI_COMM_WORLD_RANK='x'"},
      {{{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "2"}}, "OMPI_COMM_WORLD_RANK 2"},
      {{{"OMPI_COMM_WORLD_RANK", "0"}}, "only one of"},
      {{{"PMI_RANK", "-1"}, {"PMI_SIZE", "2"}}, "PMI_RANK"},
      {{{"PMI_RANK", "0"}, {"PMI_SIZE", "0"}}, "PMI_SIZE must be at least 1"},
      {{{"SLURM_PROCID", "1"},
        {"SLURM_STEP_NUM_TASKS", "4"},
        {"SLURM_NODEID", "3"},
        {"SLURM_STEP_NUM_NODES", "2"}},
       "SLURM_NODEID 3"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<WorldInfo> world = DetectWorld(FakeEnv(c.env));
    ASSERT_FALSE(world.ok()) << c.mentions;
    EXPECT_EQ(world.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(world.status().message(), c.mentions)) << world.status();
  }
}

}  // namespace
}  // namespace loom
