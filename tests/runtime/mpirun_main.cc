// main() of the GoogleTest programs that run under mpirun: every rank runs the same tests against
// its own communicator. Rank 0 prints the usual report, the others only their failures (prefixed
// with the rank). Any failure on any rank fails every rank's exit status; a run whose tests were
// all skipped exits with 77, which ctest reports as skipped (SKIP_RETURN_CODE).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

namespace {

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}

  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 result.file_name() != nullptr ? result.file_name() : "?", result.line_number(),
                 result.message());
  }

 private:
  const int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  // The runtime makes all its MPI calls under one lock (runtime/mpi_session.h).
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  ::testing::InitGoogleTest(&argc, argv);
  if (rank != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  const int result = RUN_ALL_TESTS();
  const ::testing::UnitTest& unit = *::testing::UnitTest::GetInstance();
  int outcome[2] = {result != 0 ? 1 : 0,
                    unit.test_to_run_count() > unit.skipped_test_count() ? 1 : 0};
  MPI_Allreduce(MPI_IN_PLACE, outcome, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  if (outcome[0] != 0) return 1;
  return outcome[1] != 0 ? 0 : 77;
}
