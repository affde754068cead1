// Readers for the stored inputs of the C++ harnesses (bench/cpp/make_inputs.py writes them): a minimal
// .npy reader (format 1.x-3.x, little-endian, C order, the five dtypes the inputs use) and a `key value`
// text file of scalars and control fields. Header-only; nothing here is part of visitcal_core.
#pragma once

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace visitcal_bench {

// Large buffers as numpy allocates them: numpy (>= 1.19 on Linux) calls madvise(MADV_HUGEPAGE) on
// every allocation of 4 MiB or more, so with transparent huge pages in "madvise" mode (this machine's
// setting, /sys/kernel/mm/transparent_hugepage/enabled) its images sit on 2 MiB pages and a plain
// std::vector's on 4 KiB pages. The column pass of a separable convolution or an FFT tile's rows touch
// one page per row: the harness would time the TLB rather than the kernel. Buffers of >= 4 MiB are
// therefore 2 MiB-aligned and advised as numpy's are, unless --hugepages off (huge_pages() = false).
inline bool& huge_pages() {
    static bool on = true;
    return on;
}

template <typename T>
struct HugePageAllocator {
    using value_type = T;
    HugePageAllocator() = default;
    template <typename U>
    HugePageAllocator(const HugePageAllocator<U>&) {}
    T* allocate(std::size_t n) {
        const std::size_t bytes = n * sizeof(T);
        constexpr std::size_t kHuge = std::size_t(1) << 21, kThreshold = std::size_t(1) << 22;
        if (bytes < kThreshold) {
            if (void* p = std::malloc(bytes ? bytes : 1)) return static_cast<T*>(p);
            throw std::bad_alloc();
        }
        void* p = std::aligned_alloc(kHuge, (bytes + kHuge - 1) / kHuge * kHuge);
        if (!p) throw std::bad_alloc();
        if (huge_pages()) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: failure leaves 4 KiB pages
        return static_cast<T*>(p);
    }
    void deallocate(T* p, std::size_t) { std::free(p); }
    template <typename U>
    bool operator==(const HugePageAllocator<U>&) const { return true; }
    template <typename U>
    bool operator!=(const HugePageAllocator<U>&) const { return false; }
};

template <typename T>
using Buffer = std::vector<T, HugePageAllocator<T>>;

template <typename T>
const char* npy_descr() {
    if (std::is_same<T, float>::value) return "<f4";
    if (std::is_same<T, double>::value) return "<f8";
    if (std::is_same<T, std::int32_t>::value) return "<i4";
    if (std::is_same<T, std::int64_t>::value) return "<i8";
    if (std::is_same<T, std::uint8_t>::value) return "|u1";
    throw std::logic_error("npy_descr: unsupported type");
}

// An n-d array read from a .npy file: values in C order and the shape.
template <typename T>
struct NpyArray {
    Buffer<T> data;
    std::vector<std::size_t> shape;
    std::size_t dim(std::size_t k) const {
        if (k >= shape.size()) throw std::out_of_range("array has fewer dimensions");
        return shape[k];
    }
};

namespace detail {

inline std::string header_value(const std::string& header, const std::string& key, const std::string& path) {
    const std::string quoted = "'" + key + "':";
    const auto at = header.find(quoted);
    if (at == std::string::npos) throw std::runtime_error(path + ": .npy header lacks " + key);
    auto p = header.find_first_not_of(' ', at + quoted.size());
    if (p == std::string::npos) throw std::runtime_error(path + ": bad .npy header");
    if (header[p] == '\'') {
        const auto e = header.find('\'', p + 1);
        return header.substr(p + 1, e - p - 1);
    }
    if (header[p] == '(') {
        const auto e = header.find(')', p);
        return header.substr(p + 1, e - p - 1);
    }
    const auto e = header.find_first_of(",}", p);
    return header.substr(p, e - p);
}

}  // namespace detail

// Read `path` as a .npy file of dtype T (exact match: no conversion), C order. Throws std::runtime_error
// naming the file on any mismatch.
template <typename T>
NpyArray<T> read_npy(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path + " (run bench/cpp/make_inputs.py first)");
    char magic[8];
    if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + ": not a .npy file");
    const int major = static_cast<unsigned char>(magic[6]);
    std::uint32_t header_len = 0;
    if (major == 1) {
        unsigned char b[2];
        in.read(reinterpret_cast<char*>(b), 2);
        header_len = b[0] | (b[1] << 8);
    } else if (major == 2 || major == 3) {
        unsigned char b[4];
        in.read(reinterpret_cast<char*>(b), 4);
        header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<std::uint32_t>(b[3]) << 24);
    } else {
        throw std::runtime_error(path + ": unsupported .npy version " + std::to_string(major));
    }
    std::string header(header_len, '\0');
    if (!in.read(&header[0], header_len)) throw std::runtime_error(path + ": truncated .npy header");
    const std::string descr = detail::header_value(header, "descr", path);
    if (descr != npy_descr<T>()) throw std::runtime_error(path + ": dtype " + descr + ", expected " + npy_descr<T>());
    if (detail::header_value(header, "fortran_order", path) != "False")
        throw std::runtime_error(path + ": Fortran order is not supported");
    NpyArray<T> a;
    std::stringstream shape(detail::header_value(header, "shape", path));
    std::string item;
    std::size_t count = 1;
    while (std::getline(shape, item, ',')) {
        if (item.find_first_not_of(' ') == std::string::npos) continue;
        a.shape.push_back(static_cast<std::size_t>(std::stoull(item)));
        count *= a.shape.back();
    }
    a.data.resize(count);
    if (count && !in.read(reinterpret_cast<char*>(a.data.data()), static_cast<std::streamsize>(count * sizeof(T))))
        throw std::runtime_error(path + ": truncated .npy data");
    return a;
}

// `key value` lines (value: the rest of the line). Every key must be consumed by a getter, so that a
// control field added on the Python side and not set here is an error (check_all_used), not a silent
// default.
class KeyValues {
public:
    explicit KeyValues(const std::string& path) : path_(path) {
        std::ifstream in(path);
        if (!in) throw std::runtime_error("cannot open " + path + " (run bench/cpp/make_inputs.py first)");
        std::string line;
        while (std::getline(in, line)) {
            if (line.empty() || line[0] == '#') continue;
            const auto sp = line.find(' ');
            if (sp == std::string::npos) throw std::runtime_error(path + ": line without a value: " + line);
            values_[line.substr(0, sp)] = line.substr(sp + 1);
        }
    }
    bool has(const std::string& key) const { return values_.count(key) != 0; }
    const std::string& str(const std::string& key) {
        const auto it = values_.find(key);
        if (it == values_.end()) throw std::runtime_error(path_ + ": missing key " + key);
        used_.insert(key);
        return it->second;
    }
    double num(const std::string& key) { return std::stod(str(key)); }
    long long integer(const std::string& key) { return std::stoll(str(key)); }
    bool flag(const std::string& key) { return integer(key) != 0; }
    std::vector<double> nums(const std::string& key) {
        std::vector<double> out;
        std::stringstream s(str(key));
        std::string item;
        while (std::getline(s, item, ',')) out.push_back(std::stod(item));
        return out;
    }
    template <typename T>
    void set(const std::string& key, T& field) {
        if constexpr (std::is_same<T, bool>::value) field = flag(key);
        else if constexpr (std::is_floating_point<T>::value) field = static_cast<T>(num(key));
        else field = static_cast<T>(integer(key));
    }
    void check_all_used() const {
        for (const auto& kv : values_)
            if (!used_.count(kv.first)) throw std::runtime_error(path_ + ": key " + kv.first + " is not read by the harness");
    }
    const std::map<std::string, std::string>& all() const { return values_; }

private:
    std::string path_;
    std::map<std::string, std::string> values_;
    std::set<std::string> used_;
};

}  // namespace visitcal_bench
