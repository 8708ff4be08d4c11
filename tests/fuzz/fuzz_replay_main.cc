// The fuzz targets as ordinary regression tests (any compiler, no libFuzzer):
// runs LLVMFuzzerTestOneInput on every file of the corpus directories given
// as arguments (the seeds, and every crash ever found, kept as a file), then
// on a bounded number of pseudo-random inputs from a fixed seed. Exits 0 if
// nothing crashed (a crash aborts the process, failing the test).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cstdio>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  size_t files = 0;
  for (int i = 1; i < argc; i++) {
    std::error_code ec;
    std::vector<std::filesystem::path> paths;
    if (std::filesystem::is_directory(argv[i], ec)) {
      for (const auto& e : std::filesystem::directory_iterator(argv[i], ec))
        if (e.is_regular_file()) paths.push_back(e.path());
    } else {
      paths.push_back(argv[i]);
    }
    for (const auto& p : paths) {
      std::ifstream in(p, std::ios::binary);
      std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                 std::istreambuf_iterator<char>());
      LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
      files++;
    }
  }
  const char* env = getenv("FUZZ_REPLAY_RANDOM_RUNS");
  const int runs = env ? atoi(env) : 300;
  std::mt19937_64 rng(12345);
  // Each random input is written out before it runs: if it crashes, that
  // file is the new corpus entry (Bazel keeps it in the test's outputs).
  const char* outputs = getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  const std::string last = std::string(outputs ? outputs : "/tmp") + "/fuzz-crash-candidate";
  for (int r = 0; r < runs; r++) {
    std::vector<uint8_t> bytes(rng() % 3000);
    for (auto& b : bytes) b = static_cast<uint8_t>(rng());
    {
      std::ofstream out(last, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    }
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  }
  std::remove(last.c_str());
  printf("replayed %zu corpus files and %d random inputs\n", files, runs);
  return 0;
}
