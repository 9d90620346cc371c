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
	@echo "smedjan build ($(BUILD)): ✓ OpenMP  ✓ $(BLAS_MSG)  ✗ CUDA (not in this build)$(if $(filter 1,$(SANITIZE)),  ✓ ASan+UBSan)"

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
