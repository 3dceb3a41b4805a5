# Runtime tests that need several processes: GoogleTest programs started by mpirun, one process
# per rank, with their own main (mpirun_main.cc) that initialises MPI and fails every rank when
# any rank fails. Each world size is one ctest test; together they take about 40 s on 2 cores.
set(loom_mpirun_dir ${CMAKE_CURRENT_LIST_DIR})
set(loom_mpirun_env "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")

function(loom_mpirun_test program)
  cmake_parse_arguments(ARG "" "" "RANKS" ${ARGN})
  add_executable(${program} ${loom_mpirun_dir}/${program}.cc ${loom_mpirun_dir}/mpirun_main.cc)
  target_link_libraries(${program} PRIVATE loom_runtime GTest::gtest)
  loom_target_options(${program})
  foreach(np ${ARG_RANKS})
    add_test(NAME ${program}.np${np}
             COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe ${MPIEXEC_NUMPROC_FLAG} ${np}
                     $<TARGET_FILE:${program}>)
    # Several processes per test: it takes both of ctest's slots (scripts/test.sh runs -j2), so
    # nothing else shares the cores with it.
    set_tests_properties(${program}.np${np} PROPERTIES
      ENVIRONMENT "${loom_mpirun_env}" TIMEOUT 180 SKIP_RETURN_CODE 77
      PROCESSORS 2 LABELS "mpi")
  endforeach()
endfunction()

loom_mpirun_test(mpi_communicator_mpirun RANKS 1 2 3 4 5 8)
if(LOOM_HAVE_NCCL)
  # One GPU per rank: skipped (exit 77) where fewer GPUs than ranks are visible.
  loom_mpirun_test(nccl_communicator_mpirun RANKS 2)
endif()
