// Shared helpers for the C++ benchmark harnesses in bench/cpp: wall-clock timing (best of N and
// median after a warm-up), one-core pinning, a compiler barrier, machine info and a tiny JSON
// writer. Header-only so each harness is one .cpp file; nothing here is part of visitcal_core.
#pragma once

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace visitcal_bench {

// Wall-clock seconds of each of `repeat` calls of fn, after `warmup` untimed calls, and the calling
// thread's CPU seconds of each (CLOCK_THREAD_CPUTIME_ID: on a shared machine the wall clock also counts
// the time the pinned thread waited for its core; the CPU time does not).
struct Timing {
    std::vector<double> seconds;
    std::vector<double> cpu_seconds;
    double best() const { return *std::min_element(seconds.begin(), seconds.end()); }
    double cpu_best() const { return *std::min_element(cpu_seconds.begin(), cpu_seconds.end()); }
    double median() const {
        std::vector<double> s = seconds;
        std::sort(s.begin(), s.end());
        const std::size_t n = s.size();
        return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    }
};

inline double thread_cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

template <typename Fn>
Timing time_it(Fn&& fn, int repeat, int warmup = 1) {
    using clock = std::chrono::steady_clock;
    for (int k = 0; k < warmup; ++k) fn();
    Timing t;
    t.seconds.reserve(static_cast<std::size_t>(repeat));
    t.cpu_seconds.reserve(static_cast<std::size_t>(repeat));
    for (int k = 0; k < repeat; ++k) {
        const double c0 = thread_cpu_seconds();
        const auto t0 = clock::now();
        fn();
        const auto t1 = clock::now();
        const double c1 = thread_cpu_seconds();
        t.seconds.push_back(std::chrono::duration<double>(t1 - t0).count());
        t.cpu_seconds.push_back(c1 - c0);
    }
    return t;
}

// Keeps the compiler from discarding stores to p (the output buffers are otherwise never read).
inline void clobber(const void* p) { asm volatile("" : : "g"(p) : "memory"); }

// Pin the calling thread to one CPU; returns false (and the caller carries on unpinned) on failure.
inline bool pin_to_cpu(int cpu) {
    if (cpu < 0) return false;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set) == 0;
}

inline std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("model name", 0) == 0) {
            const auto colon = line.find(':');
            if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
        }
    }
    return "unknown";
}

inline std::string compiler_id() {
#if defined(__clang__)
    return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    return std::string("gcc ") + __VERSION__;
#else
    return "unknown";
#endif
}

inline std::string json_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    return out;
}

// A flat JSON object builder: add("key", value) for numbers and strings, raw("key", json) for
// nested objects or arrays already rendered.
class JsonObject {
public:
    JsonObject& add(const std::string& key, double v) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.9g", v);
        return raw(key, buf);
    }
    JsonObject& add(const std::string& key, long long v) { return raw(key, std::to_string(v)); }
    JsonObject& add(const std::string& key, int v) { return raw(key, std::to_string(v)); }
    JsonObject& add(const std::string& key, const std::string& v) { return raw(key, "\"" + json_escape(v) + "\""); }
    JsonObject& add(const std::string& key, const char* v) { return add(key, std::string(v)); }
    JsonObject& add(const std::string& key, bool v) { return raw(key, v ? "true" : "false"); }
    JsonObject& raw(const std::string& key, const std::string& json) {
        items_.emplace_back(key, json);
        return *this;
    }
    std::string str(int indent = 0) const {
        const std::string pad(static_cast<std::size_t>(indent + 2), ' ');
        std::ostringstream os;
        os << "{";
        for (std::size_t k = 0; k < items_.size(); ++k) {
            os << (k ? ",\n" : "\n") << pad << "\"" << json_escape(items_[k].first) << "\": " << items_[k].second;
        }
        os << "\n" << std::string(static_cast<std::size_t>(indent), ' ') << "}";
        return os.str();
    }

private:
    std::vector<std::pair<std::string, std::string>> items_;
};

inline std::string json_array(const std::vector<std::string>& items, int indent = 0) {
    const std::string pad(static_cast<std::size_t>(indent + 2), ' ');
    std::ostringstream os;
    os << "[";
    for (std::size_t k = 0; k < items.size(); ++k) os << (k ? ",\n" : "\n") << pad << items[k];
    os << "\n" << std::string(static_cast<std::size_t>(indent), ' ') << "]";
    return os.str();
}

inline std::string json_timing(const Timing& t, bool cpu = false) {
    std::vector<std::string> s;
    for (double v : cpu ? t.cpu_seconds : t.seconds) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.6g", v);
        s.emplace_back(buf);
    }
    std::string arr = "[";
    for (std::size_t k = 0; k < s.size(); ++k) arr += (k ? ", " : "") + s[k];
    return arr + "]";
}

/// The "machine" object both harnesses write: CPU model, the pinned CPU (-1: none), the compiler and the
/// flags the harness was built with (VISITCAL_BENCH_CXX_FLAGS, passed by the caller).
inline std::string machine_json(int pinned_cpu, const char* cxx_flags, int indent = 2) {
    return JsonObject()
        .add("cpu_model", cpu_model())
        .add("pinned_cpu", pinned_cpu)
        .add("compiler", compiler_id())
        .add("cxx_flags", cxx_flags)
        .str(indent);
}

}  // namespace visitcal_bench
