# smedjan — build the library, the CLI and the tests.
#
#   make demo            the main job: train on the embedded corpus, print samples
#   make                 build/smedjan and build/libsmedjan.a (release, -O3 -march=native)
#   make test            build and run every test (the CI command)
#   make SANITIZE=1 test the same under AddressSanitizer + UBSan (objects in build-asan/)
#   make BLAS=openblas   use OpenBLAS's sgemm instead of our own kernels (needs libopenblas-dev)
#   make clean
#
# Sources are found by wildcard: src/<part>/*.c form the library, cli/*.c the
# binary, tests/test_*.c one test program each, tests/fuzz/fuzz_*.c one fuzz
# target each (driven by tests/fuzz/driver.c, or by libFuzzer with FUZZER=1).

CC      ?= cc
BUILD   ?= build
OPT     ?= -O3 -march=native
CFLAGS  := -std=c11 -D_GNU_SOURCE $(OPT) -fopenmp -Wall -Wextra -Wshadow -Wno-unused-parameter \
           -Wstrict-prototypes -Wmissing-prototypes -Werror=implicit-function-declaration \
           -Iinclude -fno-math-errno -g
LDLIBS  := -fopenmp -lm -lpthread

ifeq ($(SANITIZE),1)
  BUILD   := build-asan
  CFLAGS  += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1
  LDLIBS  += -fsanitize=address,undefined
else ifneq ($(SANITIZE),)
  $(error SANITIZE must be 1 or empty, not '$(SANITIZE)')
endif

ifeq ($(BLAS),openblas)
  CFLAGS  += -DSMJ_USE_OPENBLAS -I/usr/include/x86_64-linux-gnu/openblas-pthread
  LDLIBS  += -lopenblas
  BLAS_MSG := OpenBLAS sgemm
else ifeq ($(BLAS),)
  BLAS_MSG := own AVX-512/AVX2 sgemm
else
  $(error BLAS must be 'openblas' or empty, not '$(BLAS)')
endif

# ---- CUDA ----
# make CUDA=1 [GPU_ARCH="80 90a"] [CUDA_HOME=/usr/local/cuda]: adds the CUDA
# backend (src/cuda/*.cu, built by nvcc with -gencode per arch) and its
# device tests (tests/cuda/test_*.c -> build-cuda/tests/test_cuda_*); the
# whole build goes to build-cuda/ and links cuBLAS and the CUDA runtime.
# sm_90a (Hopper's arch-specific target, default) adds the wgmma kernels
# (-DSMJ_SM90A); with plain 90 Hopper runs the sm_80-class kernels.
# `make CUDA=1 cuda-test` runs the device tests (docs/CUDA.md). Without
# CUDA=1 nothing here applies.
CUDA_ARCHS_OK := 75 80 86 87 89 90 90a 100 100a 103 103a 120 120a
ifeq ($(CUDA),1)
  ifneq ($(SANITIZE),)
    $(error CUDA=1 and SANITIZE=1 cannot be combined)
  endif
  BUILD      := build-cuda
  CUDA_HOME  ?= /usr/local/cuda
  NVCC       ?= $(CUDA_HOME)/bin/nvcc
  GPU_ARCH   ?= 80 90a
  ifeq ($(strip $(GPU_ARCH)),)
    $(error GPU_ARCH is empty; give one or more of: $(CUDA_ARCHS_OK))
  endif
  ifneq ($(filter-out $(CUDA_ARCHS_OK),$(GPU_ARCH)),)
    $(error GPU_ARCH: invalid '$(filter-out $(CUDA_ARCHS_OK),$(GPU_ARCH))'; give one or more of: $(CUDA_ARCHS_OK))
  endif
  NVFLAGS    := -std=c++20 -O3 -lineinfo -DSMJ_HAVE_CUDA -Iinclude -Xcompiler -Wall \
                $(foreach a,$(GPU_ARCH),-gencode arch=compute_$(a),code=sm_$(a)) \
                $(if $(filter 90a,$(GPU_ARCH)),-DSMJ_SM90A)
  CFLAGS     += -DSMJ_HAVE_CUDA
  LDLIBS     += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcublasLt -lcudart -lstdc++
  CU_SRC     := $(sort $(wildcard src/cuda/*.cu))
  CUTEST_SRC := $(sort $(wildcard tests/cuda/test_*.c))
  CUDA_MSG   := ✓ CUDA ($(GPU_ARCH))
else ifneq ($(CUDA),)
  $(error CUDA must be 1 or empty, not '$(CUDA)')
else
  CUDA_MSG   := ✗ CUDA (not in this build)
endif
# ---- end CUDA ----

LIB_SRC   := $(sort $(wildcard src/*/*.c))
CLI_SRC   := $(sort $(wildcard cli/*.c))
TEST_SRC  := $(sort $(wildcard tests/test_*.c))
TESTUTIL  := $(sort $(wildcard tests/util/*.c))
FUZZ_SRC  := $(sort $(wildcard tests/fuzz/fuzz_*.c))

LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ   := $(CLI_SRC:%.c=$(BUILD)/%.o)
TESTU_OBJ := $(TESTUTIL:%.c=$(BUILD)/%.o)
TESTS     := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
FUZZERS   := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
LIB       := $(BUILD)/libsmedjan.a
BIN       := $(BUILD)/smedjan


.PHONY: all test clean fuzz report demo
# keep objects made by chained rules (test and fuzz objects)
.SECONDARY:
all: report $(BIN) $(LIB)

report:
	@echo "smedjan build ($(BUILD)): ✓ OpenMP  ✓ $(BLAS_MSG)  $(CUDA_MSG)$(if $(filter 1,$(SANITIZE)),  ✓ ASan+UBSan)"

$(BUILD)/%.o: %.c $(wildcard include/*.h src/*/*.h tests/util/*.h cli/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@echo "  AR    $@"
	@rm -f $@ && ar rcs $@ $^

$(BIN): $(CLI_OBJ) $(LIB)
	@echo "  LINK  $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TESTU_OBJ) $(LIB)
	@echo "  LINK  $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/fuzz/%: $(BUILD)/tests/fuzz/%.o $(BUILD)/tests/fuzz/driver.o $(LIB)
	@mkdir -p $(dir $@)
	@echo "  LINK  $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

fuzz: $(FUZZERS)

# Every test program and every fuzz target (on its corpus plus bounded random
# mutations) runs; the summary line is "N passed, N failed".
test: report $(BIN) $(TESTS) $(FUZZERS)
	@SMJ_BIN=$(abspath $(BIN)) sh tests/run_all.sh $(TESTS) $(FUZZERS)

# The main job: tokenizer, data, training and samples on the embedded corpus.
demo: $(BIN)
	@sh scripts/demo.sh

clean:
	rm -rf build build-asan

# ---- CUDA ----
ifeq ($(CUDA),1)
CU_OBJ     := $(CU_SRC:%.cu=$(BUILD)/%.o)
$(LIB): $(CU_OBJ)
CUDA_TESTS := $(CUTEST_SRC:tests/cuda/%.c=$(BUILD)/tests/%)
all: $(CUDA_TESTS) $(TESTS)

# The element-wise and norm kernels read their inputs in fp32 or as exact
# bf16 copies (instantiations per type) and must round alike in every one:
# no contraction of a*b + c into fma there, which ptxas may choose per
# instantiation (memory-bound kernels: the extra instructions are free).
$(BUILD)/src/cuda/norms.o $(BUILD)/src/cuda/elementwise.o: NVFLAGS += -fmad=false
$(BUILD)/%.o: %.cu $(wildcard include/*.h src/*/*.h src/cuda/*.cuh)
	@mkdir -p $(dir $@)
	@echo "  NVCC  $<"
	@$(NVCC) $(NVFLAGS) -c $< -o $@

$(BUILD)/tests/test_cuda_%: $(BUILD)/tests/cuda/test_cuda_%.o $(TESTU_OBJ) $(LIB)
	@echo "  LINK  $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

.PHONY: cuda-test
cuda-test: report $(BIN) $(CUDA_TESTS)
	@SMJ_BIN=$(abspath $(BIN)) sh tests/run_all.sh $(CUDA_TESTS)
endif
.PHONY: clean-cuda
clean: clean-cuda
clean-cuda:
	rm -rf build-cuda
# ---- end CUDA ----
