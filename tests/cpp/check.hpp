// The tally of the C++ test programs: one line per check, and the closing
// "N passed, M failed" line that ctest's log and CI read.
#pragma once

#include <cstdio>
#include <string>

namespace charrnn_test {

struct Tally {
    int passed = 0, failed = 0;

    void check(bool ok, const std::string& what) {
        std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
        (ok ? passed : failed) += 1;
    }
    // Prints the closing line; the program's exit code.
    int finish() const {
        std::printf("%d passed, %d failed\n", passed, failed);
        return failed ? 1 : 0;
    }
};

inline Tally tally;

}  // namespace charrnn_test
