#pragma once
// GGUF reader (versions 2 and 3, little-endian): header, key/value metadata of every type including
// nested arrays, tensor infos, alignment and data offsets. Opening a file reads the header only;
// tensor data is read on request, one tensor at a time.
//
// Layout read here: "GGUF" magic, u32 version, u64 tensor count, u64 KV count; each KV is a
// string key (u64 length + bytes), a u32 value type and the value (arrays: u32 element type, u64
// count, elements); each tensor info is a string name, u32 n_dims, n_dims x u64 ne, u32 ggml type,
// u64 offset. Tensor data starts at the first multiple of `general.alignment` (default 32) after
// the tensor infos; each tensor offset is relative to that start and a multiple of the alignment.
//
// open() maps the file read-only (detail/mapped_file.hpp) where the platform allows, so tensor
// data can be used in place: tensor_data() hands out a view of a tensor's bytes, valid while any
// copy of the gguf_file lives. Where mapping fails the file is read through streams and
// tensor_data() returns nullptr; read_tensor_range works either way.
//
// Every count, length, dimension and offset is checked against the bytes left in the file before
// it is used, so a truncated or hostile file gives moeroute::error naming the field, never a
// crash or an allocation larger than a small multiple of the file size. Views are only handed out
// for tensors whose data was checked to lie inside the file.

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "moeroute/detail/float16.hpp"
#include "moeroute/detail/mapped_file.hpp"
#include "moeroute/error.hpp"

namespace moeroute {

/// GGUF metadata value type ids, as stored in the file.
enum class gguf_type : std::uint32_t {
  uint8 = 0,
  int8 = 1,
  uint16 = 2,
  int16 = 3,
  uint32 = 4,
  int32 = 5,
  float32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  uint64 = 10,
  int64 = 11,
  float64 = 12,
};

/// Name of a GGUF value type ("uint32", "string", ...); "unknown" for ids outside the enum.
inline const char* gguf_type_name(gguf_type t) noexcept {
  switch (t) {
    case gguf_type::uint8: return "uint8";
    case gguf_type::int8: return "int8";
    case gguf_type::uint16: return "uint16";
    case gguf_type::int16: return "int16";
    case gguf_type::uint32: return "uint32";
    case gguf_type::int32: return "int32";
    case gguf_type::float32: return "float32";
    case gguf_type::boolean: return "bool";
    case gguf_type::string: return "string";
    case gguf_type::array: return "array";
    case gguf_type::uint64: return "uint64";
    case gguf_type::int64: return "int64";
    case gguf_type::float64: return "float64";
  }
  return "unknown";
}

/// ggml tensor type ids this reader knows (the ids written in GGUF tensor infos).
enum class ggml_type : std::uint32_t {
  f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9,
  q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14, q8_k = 15,
  iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22,
  iq4_xs = 23, i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_m = 29, bf16 = 30,
  tq1_0 = 34, tq2_0 = 35, mxfp4 = 39,
};

/// Storage layout of a ggml type: `block_size` elements take `type_size` bytes.
struct ggml_type_traits {
  std::uint32_t id;
  const char* name;
  std::uint32_t block_size;
  std::uint32_t type_size;
};

/// Traits of a ggml type id, or nullptr when the id is not one this reader knows.
inline const ggml_type_traits* find_ggml_type(std::uint32_t id) noexcept {
  static const ggml_type_traits table[] = {
      {0, "F32", 1, 4},          {1, "F16", 1, 2},         {2, "Q4_0", 32, 18},
      {3, "Q4_1", 32, 20},       {6, "Q5_0", 32, 22},      {7, "Q5_1", 32, 24},
      {8, "Q8_0", 32, 34},       {9, "Q8_1", 32, 36},      {10, "Q2_K", 256, 84},
      {11, "Q3_K", 256, 110},    {12, "Q4_K", 256, 144},   {13, "Q5_K", 256, 176},
      {14, "Q6_K", 256, 210},    {15, "Q8_K", 256, 292},   {16, "IQ2_XXS", 256, 66},
      {17, "IQ2_XS", 256, 74},   {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},
      {20, "IQ4_NL", 32, 18},    {21, "IQ3_S", 256, 110},  {22, "IQ2_S", 256, 82},
      {23, "IQ4_XS", 256, 136},  {24, "I8", 1, 1},         {25, "I16", 1, 2},
      {26, "I32", 1, 4},         {27, "I64", 1, 8},        {28, "F64", 1, 8},
      {29, "IQ1_M", 256, 56},    {30, "BF16", 1, 2},       {34, "TQ1_0", 256, 54},
      {35, "TQ2_0", 256, 66},    {39, "MXFP4", 32, 17},
  };
  for (const auto& t : table)
    if (t.id == id) return &t;
  return nullptr;
}

/// One metadata value: a scalar, a string, or an array (of scalars, strings or arrays).
/// Accessors throw moeroute::error(bad_input) when the value is not of the requested kind.
class gguf_value {
 public:
  gguf_value() = default;

  gguf_type type() const noexcept { return type_; }
  bool is_array() const noexcept { return type_ == gguf_type::array; }
  bool is_string() const noexcept { return type_ == gguf_type::string; }
  /// True for the eight integer types (not bool).
  bool is_integer() const noexcept { return is_integer_type(type_); }
  /// True for integers and floats.
  bool is_number() const noexcept {
    return is_integer() || type_ == gguf_type::float32 || type_ == gguf_type::float64;
  }

  /// The value as a signed integer (any integer type; uint64 above INT64_MAX is an error).
  std::int64_t as_int() const {
    MOEROUTE_CHECK(is_integer(), errc::bad_input, "GGUF value of type ", gguf_type_name(type_),
                   " is not an integer");
    if (type_ == gguf_type::uint64)
      MOEROUTE_CHECK(u_ <= static_cast<std::uint64_t>(INT64_MAX), errc::bad_input,
                     "GGUF uint64 value ", u_, " does not fit in int64");
    return i_;
  }
  /// The value as an unsigned integer (any integer type; negative values are an error).
  std::uint64_t as_uint() const {
    MOEROUTE_CHECK(is_integer(), errc::bad_input, "GGUF value of type ", gguf_type_name(type_),
                   " is not an integer");
    MOEROUTE_CHECK(type_ == gguf_type::uint64 || i_ >= 0, errc::bad_input, "GGUF value ", i_,
                   " is negative");
    return u_;
  }
  /// The value as a double (any integer or float type).
  double as_double() const {
    MOEROUTE_CHECK(is_number(), errc::bad_input, "GGUF value of type ", gguf_type_name(type_),
                   " is not a number");
    if (type_ == gguf_type::float32 || type_ == gguf_type::float64) return f_;
    if (type_ == gguf_type::uint64) return static_cast<double>(u_);
    return static_cast<double>(i_);
  }
  bool as_bool() const {
    MOEROUTE_CHECK(type_ == gguf_type::boolean, errc::bad_input, "GGUF value of type ",
                   gguf_type_name(type_), " is not a bool");
    return u_ != 0;
  }
  const std::string& as_string() const {
    MOEROUTE_CHECK(is_string(), errc::bad_input, "GGUF value of type ", gguf_type_name(type_),
                   " is not a string");
    return str_;
  }

  /// Element type of an array (error for non-arrays).
  gguf_type array_type() const {
    require_array();
    return elem_;
  }
  /// Number of elements of an array (error for non-arrays).
  std::size_t size() const {
    require_array();
    return static_cast<std::size_t>(count_);
  }
  /// Element i of an array, as a value of its own (error when out of range).
  gguf_value at(std::size_t i) const {
    require_array();
    MOEROUTE_CHECK(i < count_, errc::bad_input, "GGUF array index ", i, " out of range (size ",
                   count_, ")");
    if (elem_ == gguf_type::string) return make_string(strs_[i]);
    if (elem_ == gguf_type::array) return items_[i];
    const std::size_t w = scalar_size(elem_);
    return make_scalar(elem_, raw_.data() + i * w);
  }
  /// The elements of an array of strings.
  const std::vector<std::string>& as_string_array() const {
    require_array();
    MOEROUTE_CHECK(elem_ == gguf_type::string, errc::bad_input, "GGUF array of ",
                   gguf_type_name(elem_), " is not an array of strings");
    return strs_;
  }

  /// Byte size of a scalar type (0 for string, array and unknown ids).
  static std::size_t scalar_size(gguf_type t) noexcept {
    switch (t) {
      case gguf_type::uint8: case gguf_type::int8: case gguf_type::boolean: return 1;
      case gguf_type::uint16: case gguf_type::int16: return 2;
      case gguf_type::uint32: case gguf_type::int32: case gguf_type::float32: return 4;
      case gguf_type::uint64: case gguf_type::int64: case gguf_type::float64: return 8;
      default: return 0;
    }
  }
  static bool is_integer_type(gguf_type t) noexcept {
    switch (t) {
      case gguf_type::uint8: case gguf_type::int8: case gguf_type::uint16: case gguf_type::int16:
      case gguf_type::uint32: case gguf_type::int32: case gguf_type::uint64: case gguf_type::int64:
        return true;
      default: return false;
    }
  }

  /// A scalar value decoded from `w = scalar_size(t)` little-endian bytes.
  static gguf_value make_scalar(gguf_type t, const unsigned char* p) {
    gguf_value v;
    v.type_ = t;
    const std::size_t w = scalar_size(t);
    std::uint64_t u = 0;
    for (std::size_t b = 0; b < w; ++b) u |= static_cast<std::uint64_t>(p[b]) << (8 * b);
    v.u_ = u;
    switch (t) {
      case gguf_type::int8: v.i_ = static_cast<std::int8_t>(u); break;
      case gguf_type::int16: v.i_ = static_cast<std::int16_t>(u); break;
      case gguf_type::int32: v.i_ = static_cast<std::int32_t>(u); break;
      case gguf_type::int64: v.i_ = static_cast<std::int64_t>(u); break;
      case gguf_type::float32: {
        const auto bits = static_cast<std::uint32_t>(u);
        float f;
        std::memcpy(&f, &bits, 4);
        v.f_ = f;
        break;
      }
      case gguf_type::float64: std::memcpy(&v.f_, &u, 8); break;
      default: v.i_ = static_cast<std::int64_t>(u); break;
    }
    if (t == gguf_type::int8 || t == gguf_type::int16 || t == gguf_type::int32 ||
        t == gguf_type::int64)
      v.u_ = static_cast<std::uint64_t>(v.i_);
    return v;
  }
  static gguf_value make_string(std::string s) {
    gguf_value v;
    v.type_ = gguf_type::string;
    v.str_ = std::move(s);
    return v;
  }

 private:
  friend class gguf_file;
  void require_array() const {
    MOEROUTE_CHECK(is_array(), errc::bad_input, "GGUF value of type ", gguf_type_name(type_),
                   " is not an array");
  }

  gguf_type type_ = gguf_type::uint8;
  std::uint64_t u_ = 0;
  std::int64_t i_ = 0;
  double f_ = 0.0;
  std::string str_;
  gguf_type elem_ = gguf_type::uint8;
  std::uint64_t count_ = 0;
  std::vector<unsigned char> raw_;    // scalar array elements, little-endian as in the file
  std::vector<std::string> strs_;     // string array elements
  std::vector<gguf_value> items_;     // nested array elements
};

/// One tensor info: name, ggml type, dimensions (ne[0] is the contiguous one), data location.
struct gguf_tensor_info {
  std::string name;
  std::uint32_t type = 0;           ///< ggml type id (see ggml_type / find_ggml_type)
  const char* type_name = "";       ///< "F32", "Q4_K", ...
  std::vector<std::int64_t> ne;     ///< 1 to 4 dimensions, each >= 0
  std::uint64_t offset = 0;         ///< relative to the start of the data section
  std::uint64_t file_offset = 0;    ///< absolute position of the first byte in the file
  std::uint64_t nbytes = 0;         ///< bytes of data (from the type's block layout)
  std::int64_t n_elements = 0;      ///< product of ne
};

/// Nested arrays deeper than this are rejected (bounds the parser's recursion).
inline constexpr int gguf_max_array_depth = 8;
/// Most elements of nested arrays (arrays whose elements are arrays) one file may hold in total.
inline constexpr std::uint64_t gguf_max_nested_values = std::uint64_t{1} << 20;
/// Largest number of dimensions of a tensor (ggml's GGML_MAX_DIMS).
inline constexpr std::uint32_t gguf_max_dims = 4;
/// Alignment of the data section when `general.alignment` is absent.
inline constexpr std::uint64_t gguf_default_alignment = 32;

namespace detail {
// Sequential bounds-checked reader over a file stream or a memory buffer.
class gguf_cursor {
 public:
  gguf_cursor(const std::string& name, std::istream* in, const unsigned char* mem, std::uint64_t size)
      : name_(name), in_(in), mem_(mem), size_(size) {}

  std::uint64_t pos() const noexcept { return pos_; }
  std::uint64_t left() const noexcept { return size_ - pos_; }
  const std::string& name() const noexcept { return name_; }

  // `index` >= 0 names an array element in messages ("field[index]") without building the
  // string for every element on the happy path.
  void read(void* dst, std::uint64_t n, const std::string& field, std::int64_t index = -1) {
    MOEROUTE_CHECK(n <= left(), errc::parse_error, name_, ": truncated at byte ", pos_,
                   " reading ", field, idx(index), " (needs ", n, " bytes, ", left(), " left)");
    if (n == 0) return;
    if (mem_) {
      std::memcpy(dst, mem_ + pos_, static_cast<std::size_t>(n));
    } else {
      in_->read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
      MOEROUTE_CHECK(in_->good(), errc::io_error, name_, ": read error at byte ", pos_,
                     " reading ", field);
    }
    pos_ += n;
  }
  std::uint32_t u32(const std::string& field) {
    unsigned char b[4];
    read(b, 4, field);
    return static_cast<std::uint32_t>(b[0]) | static_cast<std::uint32_t>(b[1]) << 8 |
           static_cast<std::uint32_t>(b[2]) << 16 | static_cast<std::uint32_t>(b[3]) << 24;
  }
  std::uint64_t u64(const std::string& field, std::int64_t index = -1) {
    unsigned char b[8];
    read(b, 8, field, index);
    std::uint64_t u = 0;
    for (int i = 0; i < 8; ++i) u |= static_cast<std::uint64_t>(b[i]) << (8 * i);
    return u;
  }
  std::string str(const std::string& field, std::int64_t index = -1) {
    const std::uint64_t n = u64(field, index);
    MOEROUTE_CHECK(n <= left(), errc::parse_error, name_, ": ", field, idx(index), " length ", n,
                   " at byte ", pos_ - 8, " exceeds the ", left(), " bytes left in the file");
    std::string s(static_cast<std::size_t>(n), '\0');
    read(s.data(), n, field, index);
    return s;
  }
  static std::string idx(std::int64_t index) {
    return index < 0 ? std::string() : "[" + std::to_string(index) + "]";
  }

 private:
  std::string name_;
  std::istream* in_;
  const unsigned char* mem_;
  std::uint64_t size_;
  std::uint64_t pos_ = 0;
};
}  // namespace detail

/// A parsed GGUF header: metadata and tensor infos. Tensor data stays in the file (or buffer)
/// until read_tensor_bytes / read_tensor_f32 asks for one tensor.
class gguf_file {
 public:
  /// Opens `path` and reads its header (not the tensor data). Throws moeroute::error naming the
  /// file and the field for anything malformed, truncated or unsupported.
  static gguf_file open(const std::string& path) {
    std::error_code ec;
    MOEROUTE_CHECK(!std::filesystem::is_directory(path, ec), errc::io_error, path,
                   ": is a directory, not a file");
    std::ifstream f(path, std::ios::binary);
    MOEROUTE_CHECK(f.good(), errc::io_error, path, ": cannot open file");
    f.seekg(0, std::ios::end);
    const std::streamoff end = f.tellg();
    MOEROUTE_CHECK(end >= 0, errc::io_error, path, ": cannot determine file size");
    f.seekg(0, std::ios::beg);
    gguf_file g;
    g.name_ = path;
    g.path_ = path;
    g.size_ = static_cast<std::uint64_t>(end);
    g.map_ = detail::mapped_file::map(path, g.size_);
    detail::gguf_cursor c(path, &f, g.map_ ? g.map_->data() : nullptr, g.size_);
    g.parse_header(c);
    return g;
  }

  /// Parses a GGUF held in memory (the buffer is kept for tensor reads); `name` is used in errors.
  static gguf_file parse(std::string bytes, const std::string& name) {
    gguf_file g;
    g.name_ = name;
    g.mem_ = std::make_shared<const std::string>(std::move(bytes));
    g.size_ = g.mem_->size();
    detail::gguf_cursor c(name, nullptr, reinterpret_cast<const unsigned char*>(g.mem_->data()),
                          g.size_);
    g.parse_header(c);
    return g;
  }

  const std::string& name() const noexcept { return name_; }
  std::uint32_t version() const noexcept { return version_; }
  std::uint64_t file_size() const noexcept { return size_; }
  std::uint64_t alignment() const noexcept { return alignment_; }
  /// Absolute file offset of the data section.
  std::uint64_t data_offset() const noexcept { return data_offset_; }

  /// Metadata in file order.
  const std::vector<std::pair<std::string, gguf_value>>& metadata() const noexcept { return kv_; }
  /// The value of `key`, or nullptr.
  const gguf_value* find(const std::string& key) const {
    auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
  }
  /// The value of `key`; error naming the file and key when absent.
  const gguf_value& at(const std::string& key) const {
    const gguf_value* v = find(key);
    MOEROUTE_CHECK(v != nullptr, errc::bad_input, name_, ": missing metadata key '", key, "'");
    return *v;
  }
  /// Typed lookups; errors name the file, the key and the type found.
  std::string get_string(const std::string& key) const {
    const gguf_value& v = at(key);
    MOEROUTE_CHECK(v.is_string(), errc::bad_input, name_, ": metadata '", key, "' is ",
                   gguf_type_name(v.type()), ", expected string");
    return v.as_string();
  }
  std::int64_t get_int(const std::string& key) const {
    const gguf_value& v = at(key);
    MOEROUTE_CHECK(v.is_integer(), errc::bad_input, name_, ": metadata '", key, "' is ",
                   gguf_type_name(v.type()), ", expected an integer");
    MOEROUTE_CHECK(v.type() != gguf_type::uint64 || v.as_uint() <= static_cast<std::uint64_t>(INT64_MAX),
                   errc::bad_input, name_, ": metadata '", key, "' does not fit in int64");
    return v.as_int();
  }
  double get_double(const std::string& key) const {
    const gguf_value& v = at(key);
    MOEROUTE_CHECK(v.is_number(), errc::bad_input, name_, ": metadata '", key, "' is ",
                   gguf_type_name(v.type()), ", expected a number");
    return v.as_double();
  }

  /// Tensor infos in file order.
  const std::vector<gguf_tensor_info>& tensors() const noexcept { return tensors_; }
  /// The tensor named `name`, or nullptr.
  const gguf_tensor_info* find_tensor(const std::string& name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }
  /// The tensor named `name`; error naming file and tensor when absent.
  const gguf_tensor_info& tensor(const std::string& name) const {
    const gguf_tensor_info* t = find_tensor(name);
    MOEROUTE_CHECK(t != nullptr, errc::bad_input, name_, ": no tensor '", name, "'");
    return *t;
  }

  /// True when tensor data is in memory (a mapped file or a parse() buffer): tensor_data views.
  bool in_memory() const noexcept { return base() != nullptr; }

  /// A view of tensor `t`'s t.nbytes bytes in the mapping (or the parse() buffer), valid while a
  /// copy of this gguf_file lives; nullptr when the file is read through streams. `t` must be one
  /// of tensors().
  const unsigned char* tensor_data(const gguf_tensor_info& t) const noexcept {
    const unsigned char* b = base();
    return b == nullptr ? nullptr : b + t.file_offset;
  }

  /// The raw bytes of one tensor (layout of its ggml type).
  std::vector<unsigned char> read_tensor_bytes(const std::string& tensor_name) const {
    const gguf_tensor_info& t = tensor(tensor_name);
    std::vector<unsigned char> out(static_cast<std::size_t>(t.nbytes));
    read_tensor_range(t, 0, t.nbytes, out.data());
    return out;
  }

  /// Copies bytes [offset, offset + n) of tensor `t`'s data into out (n bytes). The range is
  /// checked against the tensor's size before anything is read.
  void read_tensor_range(const gguf_tensor_info& t, std::uint64_t offset, std::uint64_t n, void* out) const {
    MOEROUTE_CHECK(offset <= t.nbytes && n <= t.nbytes - offset, errc::invalid_argument, name_, ": bytes [", offset,
                   ", +", n, ") are outside tensor '", t.name, "' (", t.nbytes, " bytes)");
    if (n == 0) return;
    if (const unsigned char* b = base()) {
      std::memcpy(out, b + t.file_offset + offset, static_cast<std::size_t>(n));
      return;
    }
    std::ifstream f(path_, std::ios::binary);
    MOEROUTE_CHECK(f.good(), errc::io_error, name_, ": cannot reopen file to read tensor '", t.name, "'");
    f.seekg(static_cast<std::streamoff>(t.file_offset + offset));
    f.read(static_cast<char*>(out), static_cast<std::streamsize>(n));
    MOEROUTE_CHECK(f.good(), errc::io_error, name_, ": read error in data of tensor '", t.name,
                   "' (file changed since it was opened?)");
  }

  /// One tensor converted to float32 (types F32, F16, BF16, F64; quantized types are unsupported
  /// here). Elements in file order: ne[0] fastest.
  std::vector<float> read_tensor_f32(const std::string& tensor_name) const {
    const gguf_tensor_info& t = tensor(tensor_name);
    const auto ty = static_cast<ggml_type>(t.type);
    MOEROUTE_CHECK(ty == ggml_type::f32 || ty == ggml_type::f16 || ty == ggml_type::bf16 ||
                       ty == ggml_type::f64,
                   errc::unsupported, name_, ": tensor '", tensor_name, "' has type ", t.type_name,
                   "; only F32, F16, BF16 and F64 can be read as float");
    const std::vector<unsigned char> raw = read_tensor_bytes(tensor_name);
    const std::size_t n = static_cast<std::size_t>(t.n_elements);
    std::vector<float> out(n);
    for (std::size_t i = 0; i < n; ++i) {
      const unsigned char* p = raw.data();
      if (ty == ggml_type::f32) {
        std::uint32_t b = 0;
        for (int k = 0; k < 4; ++k) b |= static_cast<std::uint32_t>(p[4 * i + k]) << (8 * k);
        std::memcpy(&out[i], &b, 4);
      } else if (ty == ggml_type::f64) {
        std::uint64_t b = 0;
        for (int k = 0; k < 8; ++k) b |= static_cast<std::uint64_t>(p[8 * i + k]) << (8 * k);
        double d;
        std::memcpy(&d, &b, 8);
        out[i] = static_cast<float>(d);
      } else {
        const auto h = static_cast<std::uint16_t>(p[2 * i] | (p[2 * i + 1] << 8));
        out[i] = ty == ggml_type::f16 ? half_to_float(h) : bf16_to_float(h);
      }
    }
    return out;
  }

 private:
  const unsigned char* base() const noexcept {
    if (map_) return map_->data();
    if (mem_) return reinterpret_cast<const unsigned char*>(mem_->data());
    return nullptr;
  }

  gguf_value parse_value(detail::gguf_cursor& c, gguf_type t, const std::string& field, int depth) {
    gguf_value v;
    if (t == gguf_type::string) return gguf_value::make_string(c.str(field));
    if (t != gguf_type::array) {
      const std::size_t w = gguf_value::scalar_size(t);
      MOEROUTE_CHECK(w != 0, errc::parse_error, name_, ": ", field, " has unknown value type ",
                     static_cast<std::uint32_t>(t));
      unsigned char b[8];
      c.read(b, w, field);
      return gguf_value::make_scalar(t, b);
    }
    MOEROUTE_CHECK(depth < gguf_max_array_depth, errc::parse_error, name_, ": ", field,
                   " nests arrays deeper than ", gguf_max_array_depth);
    const std::uint32_t et = c.u32(field + " element type");
    const auto elem = static_cast<gguf_type>(et);
    MOEROUTE_CHECK(et <= 12, errc::parse_error, name_, ": ", field, " has unknown element type ",
                   et);
    const std::uint64_t n = c.u64(field + " element count");
    // Smallest encoded size of one element: bounds the count by the bytes left.
    const std::uint64_t min_elem = elem == gguf_type::string  ? 8
                                   : elem == gguf_type::array ? 12
                                                              : gguf_value::scalar_size(elem);
    MOEROUTE_CHECK(n <= c.left() / min_elem, errc::parse_error, name_, ": ", field,
                   " element count ", n, " exceeds what the ", c.left(),
                   " bytes left in the file can hold");
    v.type_ = gguf_type::array;
    v.elem_ = elem;
    v.count_ = n;
    if (elem == gguf_type::string) {
      v.strs_.reserve(static_cast<std::size_t>(n));
      for (std::uint64_t i = 0; i < n; ++i)
        v.strs_.push_back(c.str(field, static_cast<std::int64_t>(i)));
    } else if (elem == gguf_type::array) {
      // Each nested value costs far more memory than its 12 file bytes: bound them per file.
      nested_values_ += n;
      MOEROUTE_CHECK(nested_values_ <= gguf_max_nested_values, errc::parse_error, name_, ": ",
                     field, " brings the nested array elements to ", nested_values_,
                     ", more than the limit of ", gguf_max_nested_values);
      v.items_.reserve(static_cast<std::size_t>(n));
      for (std::uint64_t i = 0; i < n; ++i)
        v.items_.push_back(parse_value(c, elem, detail::concat(field, "[", i, "]"), depth + 1));
    } else {
      v.raw_.resize(static_cast<std::size_t>(n * min_elem));
      c.read(v.raw_.data(), n * min_elem, field);
      if (elem == gguf_type::boolean)
        for (std::uint64_t i = 0; i < n; ++i)
          MOEROUTE_CHECK(v.raw_[static_cast<std::size_t>(i)] <= 1, errc::parse_error, name_, ": ",
                         field, "[", i, "] is not a valid bool (",
                         static_cast<int>(v.raw_[static_cast<std::size_t>(i)]), ")");
    }
    return v;
  }

  void parse_header(detail::gguf_cursor& c) {
    char magic[4];
    MOEROUTE_CHECK(size_ >= 4, errc::parse_error, name_, ": not a GGUF file (", size_,
                   " bytes, too short for the magic)");
    c.read(magic, 4, "magic");
    MOEROUTE_CHECK(std::memcmp(magic, "GGUF", 4) == 0, errc::parse_error, name_,
                   ": not a GGUF file (bad magic)");
    version_ = c.u32("version");
    MOEROUTE_CHECK(!(version_ != 0 && (version_ & 0xFFFFu) == 0), errc::unsupported, name_,
                   ": big-endian GGUF is not supported");
    MOEROUTE_CHECK(version_ == 2 || version_ == 3, errc::unsupported, name_, ": GGUF version ",
                   version_, " is not supported (2 and 3 are)");
    const std::uint64_t n_tensors = c.u64("tensor count");
    const std::uint64_t n_kv = c.u64("metadata KV count");
    // A KV takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at least 8 + 4 + 8 + 4 + 8.
    MOEROUTE_CHECK(n_kv <= c.left() / 13, errc::parse_error, name_, ": metadata KV count ", n_kv,
                   " exceeds what the ", c.left(), " bytes left in the file can hold");
    MOEROUTE_CHECK(n_tensors <= c.left() / 32, errc::parse_error, name_, ": tensor count ",
                   n_tensors, " exceeds what the ", c.left(), " bytes left in the file can hold");

    kv_.reserve(static_cast<std::size_t>(n_kv));
    for (std::uint64_t i = 0; i < n_kv; ++i) {
      const std::string kfield = detail::concat("metadata KV ", i, " key");
      std::string key = c.str(kfield);
      MOEROUTE_CHECK(!key.empty(), errc::parse_error, name_, ": ", kfield, " is empty");
      const std::string vfield = "metadata '" + key + "'";
      const std::uint32_t t = c.u32(vfield + " type");
      MOEROUTE_CHECK(t <= 12, errc::parse_error, name_, ": ", vfield, " has unknown value type ", t);
      gguf_value v = parse_value(c, static_cast<gguf_type>(t), vfield, 0);
      MOEROUTE_CHECK(kv_index_.find(key) == kv_index_.end(), errc::parse_error, name_,
                     ": duplicate metadata key '", key, "'");
      kv_index_.emplace(key, kv_.size());
      kv_.emplace_back(std::move(key), std::move(v));
    }

    alignment_ = gguf_default_alignment;
    if (const gguf_value* a = find("general.alignment")) {
      MOEROUTE_CHECK(a->is_integer(), errc::parse_error, name_,
                     ": metadata 'general.alignment' must be an integer, found ",
                     gguf_type_name(a->type()));
      const std::uint64_t al = a->type() == gguf_type::uint64 ? a->u_ : static_cast<std::uint64_t>(a->i_);
      MOEROUTE_CHECK(a->i_ > 0 && al <= (1u << 30) && (al & (al - 1)) == 0, errc::parse_error,
                     name_, ": metadata 'general.alignment' = ", a->i_,
                     " is not a power of two in [1, 2^30]");
      alignment_ = al;
    }

    tensors_.reserve(static_cast<std::size_t>(n_tensors));
    for (std::uint64_t i = 0; i < n_tensors; ++i) {
      gguf_tensor_info t;
      t.name = c.str(detail::concat("tensor info ", i, " name"));
      const std::string where = "tensor '" + t.name + "'";
      MOEROUTE_CHECK(tensor_index_.find(t.name) == tensor_index_.end(), errc::parse_error, name_,
                     ": duplicate tensor name '", t.name, "'");
      const std::uint32_t nd = c.u32(where + " n_dims");
      MOEROUTE_CHECK(nd >= 1 && nd <= gguf_max_dims, errc::parse_error, name_, ": ", where,
                     " n_dims = ", nd, " (must be 1 to ", gguf_max_dims, ")");
      std::uint64_t n_el = 1;
      bool overflow = false;
      for (std::uint32_t d = 0; d < nd; ++d) {
        const std::uint64_t ne = c.u64(detail::concat(where, " ne[", d, "]"));
        MOEROUTE_CHECK(ne <= static_cast<std::uint64_t>(INT64_MAX), errc::parse_error, name_, ": ",
                       where, " ne[", d, "] = ", ne, " is out of range");
        if (ne != 0 && n_el > static_cast<std::uint64_t>(INT64_MAX) / ne) overflow = true;
        n_el *= ne;
        t.ne.push_back(static_cast<std::int64_t>(ne));
      }
      MOEROUTE_CHECK(!overflow, errc::parse_error, name_, ": ", where,
                     " element count overflows int64");
      t.n_elements = static_cast<std::int64_t>(n_el);
      t.type = c.u32(where + " type");
      const ggml_type_traits* tr = find_ggml_type(t.type);
      MOEROUTE_CHECK(tr != nullptr, errc::unsupported, name_, ": ", where,
                     " has unknown ggml type ", t.type);
      t.type_name = tr->name;
      MOEROUTE_CHECK(t.ne[0] % tr->block_size == 0, errc::parse_error, name_, ": ", where,
                     " ne[0] = ", t.ne[0], " is not a multiple of the ", tr->name, " block size ",
                     tr->block_size);
      const std::uint64_t blocks = n_el / tr->block_size;
      MOEROUTE_CHECK(blocks <= UINT64_MAX / tr->type_size, errc::parse_error, name_, ": ", where,
                     " byte size overflows");
      t.nbytes = blocks * tr->type_size;
      t.offset = c.u64(where + " offset");
      MOEROUTE_CHECK(t.offset % alignment_ == 0, errc::parse_error, name_, ": ", where,
                     " offset ", t.offset, " is not a multiple of the alignment ", alignment_);
      tensor_index_.emplace(t.name, tensors_.size());
      tensors_.push_back(std::move(t));
    }

    const std::uint64_t end = c.pos();
    data_offset_ = end + (alignment_ - end % alignment_) % alignment_;
    const std::uint64_t data_bytes = data_offset_ <= size_ ? size_ - data_offset_ : 0;
    for (auto& t : tensors_) {
      MOEROUTE_CHECK(data_offset_ <= size_ && t.offset <= data_bytes &&
                         t.nbytes <= data_bytes - t.offset,
                     errc::parse_error, name_, ": tensor '", t.name, "' data [", t.offset, ", +",
                     t.nbytes, ") at data offset ", data_offset_, " runs past the end of the ",
                     size_, "-byte file");
      t.file_offset = data_offset_ + t.offset;
    }
  }

  std::string name_;
  std::string path_;
  std::shared_ptr<const std::string> mem_;
  std::shared_ptr<const detail::mapped_file> map_;
  std::uint64_t size_ = 0;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = gguf_default_alignment;
  std::uint64_t data_offset_ = 0;
  std::uint64_t nested_values_ = 0;
  std::vector<std::pair<std::string, gguf_value>> kv_;
  std::unordered_map<std::string, std::size_t> kv_index_;
  std::vector<gguf_tensor_info> tensors_;
  std::unordered_map<std::string, std::size_t> tensor_index_;
};

}  // namespace moeroute
