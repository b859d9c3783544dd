# The gpu tests on the emulated device (included by gpu/CMakeLists.txt when
# MOE_CUDA=EMULATED, docs/cuda.md "Testing without a GPU"): the same
# test_gpu_*.cpp files, unchanged, with the ctest label "emu" (MOE_TEST_LABEL,
# tests/CMakeLists.txt). Emulated kernels run thousands of times slower than
# on a GPU, so the time limit is generous, and the tests whose shapes a CPU
# cannot run in CI's time stay with the real-GPU run (scripts/gpu_check.sh),
# each filtered out below with its reason.
set(MOE_EMU_TIMEOUT 1500)
set(MOE_EMU_GPU_ONLY
  # S = 2048 and 8192, and the 1B preset's 8 heads x 2048: hours of fibers.
  GpuAttentionTc.Seq2048MatchesFp64Reference
  GpuAttentionTc.Seq8192MatchesFp64Reference
  GpuAttentionTc.PresetShapeMatchesFp64Reference
  # Times moe-bench's attention benchmark: speed, which emulation has not.
  GpuAttentionTc.BenchmarkTimes
  # One step of the 1B model (9 layers x 2048 tokens x 64 experts).
  GpuBackend.OneBillionPresetStepFollowsCpuBf16
)
string(REPLACE ";" ":" moe_emu_exclude "${MOE_EMU_GPU_ONLY}")

file(GLOB MOE_GPU_TEST_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/test_gpu_*.cpp)
foreach(src ${MOE_GPU_TEST_SOURCES})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE moe moe_plan GTest::gtest GTest::gtest_main)  # moe_plan: the attention bench
  gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST TEST_FILTER "-${moe_emu_exclude}"
                       PROPERTIES LABELS ${MOE_TEST_LABEL} TIMEOUT ${MOE_EMU_TIMEOUT}
                       ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE;OMP_NUM_THREADS=1"
                       DISCOVERY_TIMEOUT 60)
endforeach()
add_dependencies(test_gpu_cli moe-train moe-eval moe-bench)
add_dependencies(test_gpu_multirank moe-train)

# The same binary as an sm_86 device (99 KiB of opt-in shared memory): head
# dim 128's tensor-core attention does not fit there, and the backend must
# take the fp32 path instead of failing.
add_test(NAME emu_sm86_attention_hd128
         COMMAND test_gpu_bf16 --gtest_filter=GpuBf16.AttentionAtHeadDim128FollowsCpuOnEveryArchitecture)
set_tests_properties(emu_sm86_attention_hd128 PROPERTIES LABELS ${MOE_TEST_LABEL} TIMEOUT ${MOE_EMU_TIMEOUT}
                     ENVIRONMENT "EMU_ARCH=86")

# The fast test programs again under other legal timings: threads and blocks
# in seeded random order with warps drifting apart between barriers, and
# streams running the most recently queued independent work first, so a
# missing __syncthreads, __syncwarp or event wait changes a result.
foreach(name test_gpu_rmsnorm test_gpu_attention test_gpu_dispatch test_gpu_elementwise
             test_gpu_loss_optim test_gpu_router test_gpu_nccl test_gpu_bf16)
  add_test(NAME emu_adversarial_${name}
           COMMAND ${name} --gtest_filter=-GpuBf16.GroupedLinearMatchesCpuWithEmptyExperts)
  set_tests_properties(emu_adversarial_${name} PROPERTIES LABELS ${MOE_TEST_LABEL} TIMEOUT ${MOE_EMU_TIMEOUT}
    ENVIRONMENT "EMU_SCHEDULE=random:1,greedy;EMU_STREAMS=adversarial;OMP_NUM_THREADS=1")
endforeach()

# cuBLASLt's heuristic finding no algorithm (as it may for a shape or an
# alignment on some GPU): the bf16 linear layers must fall back to
# cublasGemmEx and give the same results.
add_test(NAME emu_cublaslt_no_algo_test_gpu_bf16
         COMMAND test_gpu_bf16 --gtest_filter=-GpuBf16.GroupedLinearMatchesCpuWithEmptyExperts)
set_tests_properties(emu_cublaslt_no_algo_test_gpu_bf16 PROPERTIES LABELS ${MOE_TEST_LABEL}
  TIMEOUT ${MOE_EMU_TIMEOUT} ENVIRONMENT "EMU_CUBLASLT_NO_ALGO=1;OMP_NUM_THREADS=1")
