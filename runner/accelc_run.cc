// accelc-run: run an accelc artifact (an exported Relax VM executable .so) without Python.
//
//   accelc-run ARTIFACT.so [--input NAME=FILE.npy ...] [--output-dir DIR]
//              [--repeat N] [--warmup N] [--threads N] [--signature]
//              [--fill-mode zeros|ones|random] [--seed N] [--device cpu|cuda]
//
// The artifact carries its I/O signature as a NUL-terminated JSON string in the C symbol
// `accelc_signature_json` (ELF section `.accelc_signature`). The runner reads it with
// dlopen/dlsym (falling back to reading the ELF section from the file when the symbol is not
// exported or the library cannot be loaded on this machine), validates the given .npy inputs
// against it (names, shapes, dtypes), runs the VM function `main` (warmup runs, then `--repeat`
// timed runs), writes every output to DIR/<sanitized output name>.npy and prints one line
//   latency_ms: median=%.3f min=%.3f mean=%.3f repeat=%d
//
// `--device cuda` (the default for artifacts whose signature target is CUDA) loads TVM's CUDA
// runtime (libtvm_runtime_cuda.so, found like libtvm_runtime.so), runs the VM on GPU 0, copies
// the inputs to the GPU once before the runs, synchronizes the device before each timed run's
// clock stops, and copies the outputs back.
//
// Exit codes: 0 success; 2 usage / input / artifact errors (one `error: ...` line on stderr,
// the same rule as the Python CLI); 1 failures while running the model.
//
// Only the tvm-ffi headers are used (no tvm/runtime/*.h): the runner must also cross-build
// against the headers shipped in the PyPI wheels, which lack some of TVM's internal headers.

#include <dlfcn.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace accelc_run {

namespace ffi = tvm::ffi;
namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/*! \brief A user-facing error: bad arguments, bad inputs, unreadable artifact. Exit code 2. */
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/*! \brief A failure while loading or running the model. Exit code 1. */
struct RunError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/*! \brief Collapse a message onto one line so that stderr carries exactly one `error:` line. */
std::string OneLine(const std::string& msg) {
  std::string out;
  out.reserve(msg.size());
  bool pending_space = false;
  for (char c : msg) {
    if (c == '\n' || c == '\r') {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) {
      out += "; ";
      pending_space = false;
    }
    out += c;
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == ';')) out.pop_back();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Minimal JSON (enough for the signature: objects, arrays, strings, numbers, literals)
// ---------------------------------------------------------------------------------------------

struct Json {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = kNull;
  bool b = false;
  double num = 0.0;
  bool is_int = false;  // the number literal had no fraction/exponent and fits in int64
  int64_t i = 0;
  std::string str;  // string value, or the raw text of a number
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;  // keeps key order

  const Json* Get(const std::string& key) const {
    if (kind != kObject) return nullptr;
    for (const auto& kv : obj) {
      if (kv.first == key) return &kv.second;
    }
    return nullptr;
  }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& text) : s_(text) {}

  Json Parse() {
    Json v = Value(0);
    Ws();
    if (pos_ != s_.size()) Fail("trailing characters");
    return v;
  }

 private:
  const std::string& s_;
  size_t pos_ = 0;

  [[noreturn]] void Fail(const std::string& what) const {
    throw UsageError("invalid signature JSON: " + what + " at offset " + std::to_string(pos_));
  }
  void Ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }
  char Peek() {
    Ws();
    return pos_ < s_.size() ? s_[pos_] : '\0';
  }
  void Expect(char c) {
    if (Peek() != c) Fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  bool Literal(const char* word) {
    size_t n = std::strlen(word);
    if (s_.compare(pos_, n, word) == 0) {
      pos_ += n;
      return true;
    }
    return false;
  }

  Json Value(int depth) {
    if (depth > 64) Fail("nesting too deep");
    Json v;
    char c = Peek();
    if (c == '{') {
      ++pos_;
      v.kind = Json::kObject;
      if (Peek() == '}') {
        ++pos_;
        return v;
      }
      while (true) {
        if (Peek() != '"') Fail("expected object key");
        std::string key = String();
        Expect(':');
        v.obj.emplace_back(std::move(key), Value(depth + 1));
        c = Peek();
        ++pos_;
        if (c == '}') break;
        if (c != ',') Fail("expected ',' or '}'");
      }
    } else if (c == '[') {
      ++pos_;
      v.kind = Json::kArray;
      if (Peek() == ']') {
        ++pos_;
        return v;
      }
      while (true) {
        v.arr.push_back(Value(depth + 1));
        c = Peek();
        ++pos_;
        if (c == ']') break;
        if (c != ',') Fail("expected ',' or ']'");
      }
    } else if (c == '"') {
      v.kind = Json::kString;
      v.str = String();
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      Number(&v);
    } else if (Literal("true")) {
      v.kind = Json::kBool;
      v.b = true;
    } else if (Literal("false")) {
      v.kind = Json::kBool;
    } else if (Literal("null")) {
      v.kind = Json::kNull;
    } else if (Literal("NaN") || Literal("Infinity") || Literal("-Infinity")) {
      // Python's json.dumps emits these by default; accept them as numbers.
      v.kind = Json::kNumber;
    } else {
      Fail("unexpected character");
    }
    return v;
  }

  void Number(Json* v) {
    size_t start = pos_;
    if (s_[pos_] == '-') ++pos_;
    bool integral = true;
    while (pos_ < s_.size()) {
      char c = s_[pos_];
      if (c >= '0' && c <= '9') {
        ++pos_;
      } else if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
        integral = false;
        ++pos_;
      } else {
        break;
      }
    }
    v->kind = Json::kNumber;
    v->str = s_.substr(start, pos_ - start);
    if (v->str == "-" || v->str.empty()) Fail("bad number");
    char* end = nullptr;
    v->num = std::strtod(v->str.c_str(), &end);
    if (end != v->str.c_str() + v->str.size()) Fail("bad number");
    if (integral) {
      errno = 0;
      long long x = std::strtoll(v->str.c_str(), &end, 10);
      if (errno == 0) {
        v->is_int = true;
        v->i = static_cast<int64_t>(x);
      }
    }
  }

  static void AppendUtf8(std::string* out, uint32_t cp) {
    if (cp < 0x80) {
      *out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      *out += static_cast<char>(0xC0 | (cp >> 6));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      *out += static_cast<char>(0xE0 | (cp >> 12));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      *out += static_cast<char>(0xF0 | (cp >> 18));
      *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  uint32_t Hex4() {
    if (pos_ + 4 > s_.size()) Fail("truncated \\u escape");
    uint32_t x = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s_[pos_++];
      x <<= 4;
      if (c >= '0' && c <= '9') {
        x |= static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        x |= static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        x |= static_cast<uint32_t>(c - 'A' + 10);
      } else {
        Fail("bad \\u escape");
      }
    }
    return x;
  }

  std::string String() {
    Expect('"');
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) Fail("unterminated string");
      char c = s_[pos_++];
      if (c == '"') break;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) Fail("unterminated escape");
      char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = Hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && pos_ + 6 <= s_.size() && s_[pos_] == '\\' &&
              s_[pos_ + 1] == 'u') {
            pos_ += 2;
            uint32_t lo = Hex4();
            if (lo >= 0xDC00 && lo < 0xE000) {
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else {
              AppendUtf8(&out, cp);
              cp = lo;
            }
          }
          AppendUtf8(&out, cp);
          break;
        }
        default: Fail("bad escape");
      }
    }
    return out;
  }
};

// ---------------------------------------------------------------------------------------------
// DTypes: signature name <-> DLDataType <-> .npy descr
// ---------------------------------------------------------------------------------------------

struct DTypeInfo {
  const char* name;  // TVM / numpy name
  uint8_t code;      // DLDataTypeCode
  uint8_t bits;
  char npy_kind;  // 'f', 'i', 'u', 'b'
};

const DTypeInfo kDTypes[] = {
    {"float16", kDLFloat, 16, 'f'}, {"float32", kDLFloat, 32, 'f'}, {"float64", kDLFloat, 64, 'f'},
    {"int8", kDLInt, 8, 'i'},       {"int16", kDLInt, 16, 'i'},     {"int32", kDLInt, 32, 'i'},
    {"int64", kDLInt, 64, 'i'},     {"uint8", kDLUInt, 8, 'u'},     {"uint16", kDLUInt, 16, 'u'},
    {"uint32", kDLUInt, 32, 'u'},   {"uint64", kDLUInt, 64, 'u'},   {"bool", kDLBool, 8, 'b'},
};

const DTypeInfo* DTypeByName(const std::string& name) {
  for (const auto& d : kDTypes) {
    if (name == d.name) return &d;
  }
  // TVM spells 1-bit booleans "uint1"/"bool"; numpy stores bool as one byte.
  if (name == "uint1") return DTypeByName("bool");
  return nullptr;
}

const DTypeInfo* DTypeByDL(DLDataType t) {
  if (t.lanes != 1) return nullptr;
  if (t.code == kDLUInt && t.bits == 1) return DTypeByName("bool");
  for (const auto& d : kDTypes) {
    if (t.code == d.code && t.bits == d.bits) return &d;
  }
  return nullptr;
}

const DTypeInfo* DTypeByNpy(char kind, int itemsize) {
  if (kind == '?') kind = 'b';
  for (const auto& d : kDTypes) {
    if (d.npy_kind == kind && d.bits / 8 == itemsize) return &d;
  }
  return nullptr;
}

DLDataType ToDL(const DTypeInfo& d) {
  DLDataType t;
  t.code = d.code;
  t.bits = d.bits;
  t.lanes = 1;
  return t;
}

std::string DLToString(DLDataType t) {
  if (const DTypeInfo* d = DTypeByDL(t)) return d->name;
  return "dtype(code=" + std::to_string(t.code) + ",bits=" + std::to_string(t.bits) +
         ",lanes=" + std::to_string(t.lanes) + ")";
}

bool HostIsLittleEndian() {
  const uint16_t x = 1;
  unsigned char c;
  std::memcpy(&c, &x, 1);
  return c == 1;
}

std::string ShapeToString(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t k = 0; k < shape.size(); ++k) {
    if (k) s += ", ";
    s += std::to_string(shape[k]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

// ---------------------------------------------------------------------------------------------
// .npy reader / writer (format versions 1.0, 2.0, 3.0; C order only)
// ---------------------------------------------------------------------------------------------

struct NpyArray {
  const DTypeInfo* dtype = nullptr;
  std::vector<int64_t> shape;
  std::vector<char> data;  // native byte order, C order
};

/*! \brief Tiny parser for the Python-literal dict in a .npy header. */
class PyLiteralParser {
 public:
  struct Value {
    enum Kind { kNone, kBool, kInt, kStr, kSeq, kDict, kOther } kind = kNone;
    bool b = false;
    int64_t i = 0;
    std::string str;
    std::vector<Value> seq;
    std::vector<std::pair<std::string, Value>> dict;
  };

  PyLiteralParser(const std::string& text, const std::string& file) : s_(text), file_(file) {}

  Value Parse() {
    Value v = Parse1(0);
    Ws();
    if (pos_ != s_.size()) Fail("trailing characters in header");
    return v;
  }

 private:
  const std::string& s_;
  const std::string& file_;
  size_t pos_ = 0;

  [[noreturn]] void Fail(const std::string& what) const {
    throw UsageError("invalid .npy file " + file_ + ": " + what);
  }
  void Ws() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  char Peek() {
    Ws();
    return pos_ < s_.size() ? s_[pos_] : '\0';
  }

  Value Parse1(int depth) {
    if (depth > 16) Fail("header nesting too deep");
    Value v;
    char c = Peek();
    if (c == '{' || c == '(' || c == '[') {
      char close = c == '{' ? '}' : (c == '(' ? ')' : ']');
      ++pos_;
      v.kind = c == '{' ? Value::kDict : Value::kSeq;
      while (Peek() != close) {
        if (pos_ >= s_.size()) Fail("unterminated header");
        if (v.kind == Value::kDict) {
          Value key = Parse1(depth + 1);
          if (key.kind != Value::kStr) Fail("header key is not a string");
          if (Peek() != ':') Fail("expected ':' in header");
          ++pos_;
          v.dict.emplace_back(key.str, Parse1(depth + 1));
        } else {
          v.seq.push_back(Parse1(depth + 1));
        }
        if (Peek() == ',') {
          ++pos_;
        } else if (Peek() != close) {
          Fail("expected ',' in header");
        }
      }
      ++pos_;
    } else if (c == '\'' || c == '"') {
      ++pos_;
      v.kind = Value::kStr;
      while (pos_ < s_.size() && s_[pos_] != c) v.str += s_[pos_++];
      if (pos_ >= s_.size()) Fail("unterminated string in header");
      ++pos_;
    } else if (c == '-' || std::isdigit(static_cast<unsigned char>(c))) {
      size_t start = pos_;
      if (c == '-') ++pos_;
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
      // numpy may write 'L' suffixes in very old files.
      std::string digits = s_.substr(start, pos_ - start);
      if (pos_ < s_.size() && (s_[pos_] == 'L' || s_[pos_] == 'l')) ++pos_;
      v.kind = Value::kInt;
      errno = 0;
      v.i = std::strtoll(digits.c_str(), nullptr, 10);
      if (errno != 0 || digits == "-") Fail("bad integer in header");
    } else if (s_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      v.kind = Value::kBool;
      v.b = true;
    } else if (s_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      v.kind = Value::kBool;
    } else if (s_.compare(pos_, 4, "None") == 0) {
      pos_ += 4;
    } else {
      Fail("unexpected character in header");
    }
    return v;
  }
};

std::vector<char> ReadFile(const std::string& path, const char* what) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw UsageError(std::string(what) + " not found: " + path);
  if (fs::is_directory(path, ec)) throw UsageError(std::string(what) + " is a directory: " + path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError(std::string("cannot open ") + what + ": " + path);
  std::vector<char> buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw UsageError(std::string("cannot read ") + what + ": " + path);
  return buf;
}

void ByteSwapInPlace(char* data, size_t count, size_t itemsize) {
  for (size_t k = 0; k < count; ++k) std::reverse(data + k * itemsize, data + (k + 1) * itemsize);
}

NpyArray ReadNpy(const std::string& path) {
  std::vector<char> buf = ReadFile(path, "input file");
  auto fail = [&](const std::string& what) -> UsageError {
    return UsageError("invalid .npy file " + path + ": " + what);
  };
  static const char kMagic[] = "\x93NUMPY";
  if (buf.size() < 10 || std::memcmp(buf.data(), kMagic, 6) != 0) {
    throw fail("missing NUMPY magic (not a .npy file)");
  }
  int major = static_cast<unsigned char>(buf[6]);
  size_t header_len, header_start;
  if (major == 1) {
    header_len = static_cast<unsigned char>(buf[8]) | (static_cast<unsigned char>(buf[9]) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (buf.size() < 12) throw fail("truncated header");
    header_len = 0;
    for (int k = 3; k >= 0; --k) header_len = (header_len << 8) | static_cast<unsigned char>(buf[8 + k]);
    header_start = 12;
  } else {
    throw fail("unsupported format version " + std::to_string(major));
  }
  if (header_start + header_len > buf.size()) throw fail("truncated header");
  std::string header(buf.data() + header_start, header_len);
  PyLiteralParser::Value dict = PyLiteralParser(header, path).Parse();
  if (dict.kind != PyLiteralParser::Value::kDict) throw fail("header is not a dict");

  const PyLiteralParser::Value* descr = nullptr;
  const PyLiteralParser::Value* fortran = nullptr;
  const PyLiteralParser::Value* shape = nullptr;
  for (const auto& kv : dict.dict) {
    if (kv.first == "descr") descr = &kv.second;
    if (kv.first == "fortran_order") fortran = &kv.second;
    if (kv.first == "shape") shape = &kv.second;
  }
  if (!descr || !fortran || !shape) throw fail("header lacks descr/fortran_order/shape");
  if (descr->kind != PyLiteralParser::Value::kStr) {
    throw fail("structured dtypes are not supported");
  }
  if (fortran->kind != PyLiteralParser::Value::kBool) throw fail("bad fortran_order");
  if (shape->kind != PyLiteralParser::Value::kSeq) throw fail("bad shape");

  NpyArray arr;
  for (const auto& d : shape->seq) {
    if (d.kind != PyLiteralParser::Value::kInt || d.i < 0) throw fail("bad shape");
    arr.shape.push_back(d.i);
  }
  const std::string& ds = descr->str;
  if (ds.size() < 3) throw fail("unsupported dtype '" + ds + "'");
  char order = ds[0];
  char kind = ds[1];
  int itemsize = std::atoi(ds.c_str() + 2);
  arr.dtype = DTypeByNpy(kind, itemsize);
  if (!arr.dtype || (order != '<' && order != '>' && order != '|' && order != '=')) {
    throw fail("unsupported dtype '" + ds + "'");
  }
  if (fortran->b) {
    bool trivial = true;  // 0-d/1-d arrays are the same in both orders
    int non_unit = 0;
    for (int64_t d : arr.shape) non_unit += d != 1;
    trivial = non_unit <= 1;
    if (!trivial) {
      throw fail("Fortran-order arrays are not supported; save with np.ascontiguousarray(a)");
    }
  }
  size_t numel = 1;
  for (int64_t d : arr.shape) numel *= static_cast<size_t>(d);
  size_t nbytes = numel * static_cast<size_t>(itemsize);
  size_t data_start = header_start + header_len;
  if (buf.size() - data_start < nbytes) {
    throw fail("truncated data (" + std::to_string(buf.size() - data_start) + " bytes, expected " +
               std::to_string(nbytes) + ")");
  }
  arr.data.assign(buf.begin() + static_cast<std::ptrdiff_t>(data_start),
                  buf.begin() + static_cast<std::ptrdiff_t>(data_start + nbytes));
  bool file_little = order == '<' || (order == '=' && HostIsLittleEndian()) || order == '|';
  if (itemsize > 1 && file_little != HostIsLittleEndian()) {
    ByteSwapInPlace(arr.data.data(), numel, static_cast<size_t>(itemsize));
  }
  return arr;
}

void WriteNpy(const std::string& path, const DTypeInfo& dtype, const std::vector<int64_t>& shape,
              const void* data, size_t nbytes) {
  const char endian = dtype.bits == 8 ? '|' : (HostIsLittleEndian() ? '<' : '>');
  std::string header = std::string("{'descr': '") + endian + dtype.npy_kind +
                       std::to_string(dtype.bits / 8) +
                       "', 'fortran_order': False, 'shape': " + ShapeToString(shape) + ", }";
  // Pad so that magic(6) + version(2) + len(2) + header + '\n' is a multiple of 64.
  size_t total = 10 + header.size() + 1;
  size_t padded = (total + 63) / 64 * 64;
  header.append(padded - total, ' ');
  header += '\n';
  if (header.size() > 65535) throw RunError("npy header too long for " + path);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw UsageError("cannot write output file: " + path);
  const char magic[] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  out.write(magic, sizeof(magic));
  const unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xFF),
                                static_cast<unsigned char>(header.size() >> 8)};
  out.write(reinterpret_cast<const char*>(len), 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(nbytes));
  if (!out) throw UsageError("cannot write output file: " + path);
}

// ---------------------------------------------------------------------------------------------
// Signature
// ---------------------------------------------------------------------------------------------

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;  // -1: dynamic dimension (symbolic name, null or negative)
  bool any_rank = false;       // "shape": null -- rank only known at run time
  std::string dtype;
};

struct Signature {
  std::string raw;
  std::string target_kind;  // "llvm", "cuda", ... (empty if the signature has none)
  std::string target_name;  // accelc's --target: "llvm", "arm", "cuda", "vta", ...
  int num_cores = 0;        // the target's "num-cores": the threads its kernels were built for
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
};

std::vector<TensorSpec> ParseSpecs(const Json& root, const char* field) {
  const Json* list = root.Get(field);
  if (!list || list->kind != Json::kArray) {
    throw UsageError(std::string("invalid artifact signature: '") + field + "' is not a list");
  }
  std::vector<TensorSpec> specs;
  for (size_t k = 0; k < list->arr.size(); ++k) {
    const Json& e = list->arr[k];
    TensorSpec spec;
    const Json* name = e.Get("name");
    const Json* shape = e.Get("shape");
    const Json* dtype = e.Get("dtype");
    std::string where = std::string(field) + "[" + std::to_string(k) + "]";
    if (!name || name->kind != Json::kString) {
      spec.name = std::string(field == std::string("inputs") ? "input" : "output") + "_" +
                  std::to_string(k);
    } else {
      spec.name = name->str;
    }
    if (!dtype || dtype->kind != Json::kString) {
      throw UsageError("invalid artifact signature: " + where + " has no dtype");
    }
    spec.dtype = dtype->str;
    if (shape && shape->kind == Json::kNull) {
      spec.any_rank = true;
      specs.push_back(std::move(spec));
      continue;
    }
    if (!shape || shape->kind != Json::kArray) {
      throw UsageError("invalid artifact signature: " + where + " has no shape");
    }
    for (const Json& d : shape->arr) {
      if (d.kind == Json::kNumber && d.is_int && d.i >= 0) {
        spec.shape.push_back(d.i);
      } else if (d.kind == Json::kString || d.kind == Json::kNull ||
                 (d.kind == Json::kNumber && d.num < 0)) {
        spec.shape.push_back(-1);
      } else {
        throw UsageError("invalid artifact signature: bad dimension in " + where + ".shape");
      }
    }
    specs.push_back(std::move(spec));
  }
  return specs;
}

std::string SpecShapeToString(const TensorSpec& spec) {
  if (spec.any_rank) return "(...)";
  const std::vector<int64_t>& shape = spec.shape;
  std::string s = "(";
  for (size_t k = 0; k < shape.size(); ++k) {
    if (k) s += ", ";
    s += shape[k] < 0 ? std::string("?") : std::to_string(shape[k]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

/*!
 * \brief The contents of ELF section `name` in `file`, without loading it; nullopt if the file
 *  is not ELF or has no such section. Works for artifacts built for other machines.
 */
std::optional<std::string> ReadElfSection(const std::string& file, const std::string& name) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return std::nullopt;
  std::vector<unsigned char> d((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
  if (d.size() < 52 || std::memcmp(d.data(), "\x7f" "ELF", 4) != 0) return std::nullopt;
  const bool is64 = d[4] == 2;
  const bool little = d[5] == 1;
  auto rd = [&](size_t off, int bytes) -> uint64_t {
    if (off + static_cast<size_t>(bytes) > d.size()) throw std::out_of_range("elf");
    uint64_t v = 0;
    for (int k = 0; k < bytes; ++k) {
      uint64_t b = d[off + (little ? static_cast<size_t>(k) : static_cast<size_t>(bytes - 1 - k))];
      v |= b << (8 * k);
    }
    return v;
  };
  try {
    const int w = is64 ? 8 : 4;
    const uint64_t shoff = rd(is64 ? 0x28 : 0x20, w);
    const uint64_t shentsize = rd(is64 ? 0x3A : 0x2E, 2);
    const uint64_t shnum = rd(is64 ? 0x3C : 0x30, 2);
    const uint64_t shstrndx = rd(is64 ? 0x3E : 0x32, 2);
    // Section header: name(4) type(4) flags(w) addr(w) offset(w) size(w) ...
    auto sec_offset = [&](uint64_t i) { return rd(shoff + i * shentsize + 8 + 2 * w, w); };
    auto sec_size = [&](uint64_t i) { return rd(shoff + i * shentsize + 8 + 3 * w, w); };
    if (shstrndx >= shnum) return std::nullopt;
    const uint64_t strtab = sec_offset(shstrndx);
    const uint64_t strsize = sec_size(shstrndx);
    for (uint64_t i = 0; i < shnum; ++i) {
      uint64_t name_off = rd(shoff + i * shentsize, 4);
      if (name_off >= strsize || strtab + strsize > d.size()) continue;
      const char* nm = reinterpret_cast<const char*>(d.data() + strtab + name_off);
      size_t maxlen = static_cast<size_t>(strsize - name_off);
      if (std::string(nm, strnlen(nm, maxlen)) != name) continue;
      uint64_t off = sec_offset(i), size = sec_size(i);
      if (off + size > d.size()) return std::nullopt;
      std::string out(reinterpret_cast<const char*>(d.data() + off), static_cast<size_t>(size));
      return out.substr(0, out.find('\0'));
    }
  } catch (const std::out_of_range&) {
    return std::nullopt;
  }
  return std::nullopt;
}

/*!
 * \brief Read the artifact's signature: the symbol `accelc_signature_json` via dlopen/dlsym,
 *  else (library not loadable here, e.g. built for another CPU, or the symbol not exported)
 *  the ELF section `.accelc_signature` read from the file.
 * \param loadable set to whether dlopen() succeeded.
 */
Signature ReadSignature(const std::string& path, bool* loadable, std::string* load_error) {
  Signature sig;
  // RTLD_NOLOAD first: reuse the handle if the library is already mapped.
  void* handle = dlopen(path.c_str(), RTLD_LAZY | RTLD_LOCAL | RTLD_NOLOAD);
  if (!handle) handle = dlopen(path.c_str(), RTLD_LAZY | RTLD_LOCAL);
  *loadable = handle != nullptr;
  const char* json = nullptr;
  if (handle) {
    dlerror();
    json = static_cast<const char*>(dlsym(handle, "accelc_signature_json"));
    // The handle stays open: LoadFromFile maps the same library again (refcounted).
  } else {
    const char* err = dlerror();
    *load_error = err ? err : "dlopen failed";
  }
  if (json) {
    sig.raw = json;
  } else if (auto section = ReadElfSection(path, ".accelc_signature")) {
    sig.raw = *section;
  } else if (!handle) {
    throw UsageError("cannot load artifact " + path + ": " + *load_error);
  } else {
    throw UsageError("not an accelc artifact (no accelc_signature_json symbol or "
                     ".accelc_signature section): " + path);
  }
  Json root = JsonParser(sig.raw).Parse();
  if (root.kind != Json::kObject) throw UsageError("invalid artifact signature: not an object");
  if (const Json* fmt = root.Get("format")) {
    if (fmt->kind == Json::kNumber && fmt->is_int && fmt->i > 1) {
      throw UsageError("artifact signature format " + fmt->str +
                       " is newer than this runner supports (1)");
    }
  }
  sig.inputs = ParseSpecs(root, "inputs");
  sig.outputs = ParseSpecs(root, "outputs");
  if (const Json* name = root.Get("target_name")) {
    if (name->kind == Json::kString) sig.target_name = name->str;
  }
  if (const Json* target = root.Get("target")) {
    if (const Json* kind = target->Get("kind")) {
      if (kind->kind == Json::kString) sig.target_kind = kind->str;
    }
    if (const Json* cores = target->Get("num-cores")) {
      if (cores->kind == Json::kNumber && cores->is_int && cores->i > 0) {
        sig.num_cores = static_cast<int>(cores->i);
      }
    }
  }
  return sig;
}

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

struct Options {
  std::string artifact;
  std::vector<std::pair<std::string, std::string>> inputs;  // name, file
  std::string output_dir = ".";
  int repeat = 10;
  int warmup = 1;
  int threads = 0;  // 0: the artifact's num-cores (else TVM's default)
  std::string fill_mode;  // empty: every input must be given
  uint64_t seed = 0;
  std::string device;  // "cpu" or "cuda"; empty: from the artifact's target
  bool signature = false;
  bool help = false;
};

const char kUsage[] =
    "usage: accelc-run ARTIFACT.so [--input NAME=FILE.npy ...] [--output-dir DIR]\n"
    "                  [--repeat N] [--warmup N] [--threads N] [--signature]\n"
    "                  [--fill-mode zeros|ones|random] [--seed N] [--device cpu|cuda]\n"
    "\n"
    "Run an accelc artifact (exported Relax VM executable) on .npy inputs.\n"
    "\n"
    "  --input NAME=FILE.npy  value of model input NAME (every input exactly once)\n"
    "  --output-dir DIR       write each output to DIR/<output name>.npy (default: .)\n"
    "  --repeat N             timed runs (default: 10)\n"
    "  --warmup N             untimed runs before timing (default: 1)\n"
    "  --threads N            TVM worker threads (sets TVM_NUM_THREADS; default: TVM_NUM_THREADS if\n"
    "                         set, else the cores the artifact was compiled for)\n"
    "  --fill-mode MODE       fill inputs not given: zeros, ones or random (default: none,\n"
    "                         every input must be given)\n"
    "  --seed N               seed for --fill-mode random (default: 0)\n"
    "  --device cpu|cuda      where to run (default: cuda for CUDA artifacts, else cpu); on\n"
    "                         cuda, inputs are copied to GPU 0 once and each timed run ends\n"
    "                         with a device synchronization\n"
    "  --signature            print the artifact's signature JSON and exit\n"
    "  -h, --help             show this help\n"
    "\n"
    "Prints 'latency_ms: median=... min=... mean=... repeat=N'. Exit code 2 on bad arguments,\n"
    "inputs or artifacts (one 'error: ...' line on stderr), 1 if running the model fails.\n";

int ParseInt(const std::string& opt, const std::string& value, int min_value) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || errno != 0 || v < min_value || v > 1000000000L) {
    throw UsageError(opt + " expects an integer >= " + std::to_string(min_value) + ", got '" +
                     value + "'");
  }
  return static_cast<int>(v);
}

Options ParseArgs(int argc, char** argv) {
  Options opt;
  bool seen_artifact = false;
  bool end_of_options = false;
  for (int k = 1; k < argc; ++k) {
    std::string arg = argv[k];
    if (end_of_options || arg.empty() || arg[0] != '-' || arg == "-") {
      if (seen_artifact) throw UsageError("unexpected argument '" + arg + "' (see --help)");
      opt.artifact = arg;
      seen_artifact = true;
      continue;
    }
    if (arg == "--") {
      end_of_options = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      opt.help = true;
      return opt;
    }
    if (arg == "--signature") {
      opt.signature = true;
      continue;
    }
    std::string name = arg, value;
    bool has_value = false;
    size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    static const std::set<std::string> kValued = {"--input", "-i", "--output-dir", "-o",
                                                  "--repeat", "--warmup", "--threads",
                                                  "--fill-mode", "--seed", "--device"};
    if (!kValued.count(name)) throw UsageError("unknown option '" + name + "' (see --help)");
    if (!has_value) {
      if (k + 1 >= argc) throw UsageError("option " + name + " needs a value");
      value = argv[++k];
    }
    if (name == "--input" || name == "-i") {
      size_t p = value.find('=');
      if (p == std::string::npos || p == 0 || p + 1 == value.size()) {
        throw UsageError("--input expects NAME=FILE.npy, got '" + value + "'");
      }
      opt.inputs.emplace_back(value.substr(0, p), value.substr(p + 1));
    } else if (name == "--output-dir" || name == "-o") {
      if (value.empty()) throw UsageError("--output-dir needs a non-empty value");
      opt.output_dir = value;
    } else if (name == "--repeat") {
      opt.repeat = ParseInt(name, value, 1);
    } else if (name == "--warmup") {
      opt.warmup = ParseInt(name, value, 0);
    } else if (name == "--threads") {
      opt.threads = ParseInt(name, value, 1);
    } else if (name == "--fill-mode") {
      if (value != "zeros" && value != "ones" && value != "random") {
        throw UsageError("--fill-mode must be one of zeros, ones, random; got '" + value + "'");
      }
      opt.fill_mode = value;
    } else if (name == "--seed") {
      opt.seed = static_cast<uint64_t>(ParseInt(name, value, 0));
    } else if (name == "--device") {
      if (value != "cpu" && value != "cuda") {
        throw UsageError("--device must be cpu or cuda; got '" + value + "'");
      }
      opt.device = value;
    }
  }
  if (!seen_artifact) throw UsageError("missing ARTIFACT argument (see --help)");
  return opt;
}

// ---------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------

/*! \brief IEEE float -> binary16 bits, round to nearest even. */
uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7FFFFFFFu;
  if (x >= 0x7F800000u) return static_cast<uint16_t>(sign | (x > 0x7F800000u ? 0x7E00u : 0x7C00u));
  if (x >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // overflow -> inf
  if (x < 0x38800000u) {  // subnormal half (or zero)
    float af;
    std::memcpy(&af, &x, 4);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(af * 16777216.0f)));
  }
  uint32_t mant = x & 0x7FFFFFu;
  uint32_t h = ((x >> 23) - 112u) << 10 | (mant >> 13);
  uint32_t rest = mant & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

/*! \brief An input made up by --fill-mode (same rules as the Python CLI's --fill-mode). */
NpyArray FillInput(const TensorSpec& spec, const DTypeInfo& dt, const std::string& mode,
                   std::mt19937_64* rng) {
  if (spec.any_rank || std::any_of(spec.shape.begin(), spec.shape.end(),
                                   [](int64_t d) { return d < 0; })) {
    throw UsageError("input '" + spec.name + "' has a dynamic shape " + SpecShapeToString(spec) +
                     "; --fill-mode cannot make it up, pass --input " + spec.name + "=FILE.npy");
  }
  NpyArray arr;
  arr.dtype = &dt;
  arr.shape = spec.shape;
  size_t numel = 1;
  for (int64_t d : arr.shape) numel *= static_cast<size_t>(d);
  const size_t item = dt.bits / 8;
  arr.data.assign(numel * item, 0);
  if (mode == "zeros") return arr;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (size_t k = 0; k < numel; ++k) {
    double v = 1.0;
    if (mode == "random") {
      if (dt.npy_kind == 'f') {
        v = unit(*rng);
      } else if (dt.npy_kind == 'b') {
        v = static_cast<double>((*rng)() & 1u);
      } else {
        // Small integers, like the Python CLI: [max(min,-128), min(max,127)].
        // Every supported integer type holds [0, 127]; signed ones also [-128, -1].
        const int64_t lo = dt.npy_kind == 'u' ? 0 : -128;
        const int64_t hi = 127;
        v = static_cast<double>(std::uniform_int_distribution<int64_t>(lo, hi)(*rng));
      }
    }
    char* dst = arr.data.data() + k * item;
    switch (dt.npy_kind) {
      case 'f':
        if (dt.bits == 16) {
          uint16_t h = FloatToHalf(static_cast<float>(v));
          std::memcpy(dst, &h, 2);
        } else if (dt.bits == 32) {
          float f = static_cast<float>(v);
          std::memcpy(dst, &f, 4);
        } else {
          std::memcpy(dst, &v, 8);
        }
        break;
      case 'b': dst[0] = v != 0.0 ? 1 : 0; break;
      default: {
        int64_t iv = static_cast<int64_t>(v);
        // Little- or big-endian host: copy the low `item` bytes of the value.
        if (HostIsLittleEndian()) {
          std::memcpy(dst, &iv, item);
        } else {
          std::memcpy(dst, reinterpret_cast<char*>(&iv) + (8 - item), item);
        }
      }
    }
  }
  return arr;
}

/*! \brief 64-byte aligned host allocation for input tensors (TVM kernels assume alignment). */
struct AlignedAlloc {
  void AllocData(DLTensor* t) {
    size_t n = ffi::GetDataSize(*t);
    size_t padded = std::max<size_t>((n + 63) / 64 * 64, 64);
    t->data = std::aligned_alloc(64, padded);
    if (!t->data) throw RunError("out of memory allocating " + std::to_string(n) + " bytes");
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

std::string SanitizeFileName(const std::string& name) {
  std::string out;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.';
    out += ok ? c : '_';
  }
  // No hidden files or "."/".." components.
  if (!out.empty() && out[0] == '.') out[0] = '_';
  return out;
}

void FlattenResult(const ffi::Any& value, std::vector<ffi::Tensor>* out) {
  if (auto t = value.as<ffi::Tensor>()) {
    out->push_back(*t);
    return;
  }
  if (auto arr = value.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& v : *arr) FlattenResult(v, out);
    return;
  }
  throw RunError("main returned a value of type " + value.GetTypeKey() +
                 ", expected a tensor or a tuple of tensors");
}

struct Stats {
  double median, min, mean;
};

Stats Summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  Stats s{};
  size_t n = ms.size();
  s.min = ms.front();
  s.median = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  double sum = 0;
  for (double x : ms) sum += x;
  s.mean = sum / static_cast<double>(n);
  return s;
}

std::string AbsoluteForDlopen(const std::string& path) {
  // dlopen() searches the library path for names without '/'; make the path explicit.
  std::error_code ec;
  fs::path p = fs::absolute(path, ec);
  return ec ? (path.find('/') == std::string::npos ? "./" + path : path) : p.string();
}

/*! \brief Load TVM's CUDA runtime (device API, CUDA module loader) into the process.
 *
 * libtvm_runtime_cuda.so sits next to libtvm_runtime.so in the tvm wheel. dlopen of a bare
 * name searches this executable's RUNPATH and LD_LIBRARY_PATH, like libtvm_runtime.so was
 * found; failing that, the folder libtvm_runtime.so was loaded from.
 */
void LoadCudaRuntime() {
  const char* kName = "libtvm_runtime_cuda.so";
  if (dlopen(kName, RTLD_NOW | RTLD_GLOBAL)) return;
  const char* err = dlerror();
  std::string first_error = err ? err : "dlopen failed";
  Dl_info info;
  void* anchor = dlsym(RTLD_DEFAULT, "TVMBackendGetFuncFromEnv");
  if (anchor && dladdr(anchor, &info) && info.dli_fname) {
    fs::path next_to_runtime = fs::path(info.dli_fname).parent_path() / kName;
    if (dlopen(next_to_runtime.c_str(), RTLD_NOW | RTLD_GLOBAL)) return;
    err = dlerror();
    if (err) first_error = err;
  }
  throw RunError(std::string("cannot load TVM's CUDA runtime (") + kName + "): " + first_error +
                 " (it needs the NVIDIA driver's libcuda.so.1 and libcudart.so.13)");
}

ffi::Function GlobalFunction(const char* name) {
  ffi::Optional<ffi::Function> f = ffi::Function::GetGlobal(name);
  if (!f.has_value()) throw RunError(std::string("TVM runtime lacks function ") + name);
  return *f;
}

/*! \brief A copy of `t` on `device` (TVM's allocator, then a device copy). */
ffi::Tensor CopyTo(const ffi::Tensor& t, DLDevice device) {
  static ffi::Function alloc = GlobalFunction("runtime.TVMTensorAllocWithScope");
  static ffi::Function copy = GlobalFunction("runtime.TVMTensorCopyFromTo");
  ffi::Tensor out = alloc(ffi::Shape(t.shape().begin(), t.shape().end()), t.dtype(), device,
                          ffi::Optional<ffi::String>())
                        .cast<ffi::Tensor>();
  copy(t, out);
  return out;
}

int Run(int argc, char** argv) {
  Options opt = ParseArgs(argc, argv);
  if (opt.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }

  // Thread count must be set before TVM's thread pool starts (it starts lazily).
  if (opt.threads > 0) setenv("TVM_NUM_THREADS", std::to_string(opt.threads).c_str(), 1);

  // 1. Artifact and signature.
  std::error_code ec;
  if (!fs::exists(opt.artifact, ec)) throw UsageError("artifact not found: " + opt.artifact);
  if (fs::is_directory(opt.artifact, ec)) {
    throw UsageError("artifact is a directory: " + opt.artifact);
  }
  const std::string artifact = AbsoluteForDlopen(opt.artifact);
  bool loadable = false;
  std::string load_error;
  Signature sig = ReadSignature(artifact, &loadable, &load_error);
  if (opt.signature) {
    std::printf("%s\n", sig.raw.c_str());
    return 0;
  }
  if (!loadable) throw UsageError("cannot load artifact " + opt.artifact + ": " + load_error);
  // TVM's own default is half the logical CPUs (it assumes hyper-threads): 1 thread on a
  // 2-core machine, for kernels parallelized for 2. The pool starts at the first run.
  if (opt.threads <= 0 && std::getenv("TVM_NUM_THREADS") == nullptr && sig.num_cores > 0) {
    setenv("TVM_NUM_THREADS", std::to_string(sig.num_cores).c_str(), 1);
  }
  if (sig.target_name == "vta") {  // its layers call accelc.vta.run_layer, which lives in Python
    throw UsageError("artifact " + opt.artifact + " targets 'vta': its offloaded layers run on " +
                     "accelc's VTA simulator, which only accelc itself provides; run it with " +
                     "`accelc run` (or accelc.load in Python)");
  }
  const std::string device_name =
      !opt.device.empty() ? opt.device : (sig.target_kind == "cuda" ? "cuda" : "cpu");
  if (device_name == "cuda" && sig.target_kind != "cuda") {
    throw UsageError("--device cuda: artifact " + opt.artifact + " targets '" + sig.target_kind +
                     "', not cuda");
  }
  if (device_name == "cpu" && sig.target_kind == "cuda") {
    throw UsageError("--device cpu: artifact " + opt.artifact + " holds CUDA kernels (target " +
                     "cuda); run it with --device cuda");
  }
  const DLDevice device{device_name == "cuda" ? kDLCUDA : kDLCPU, 0};
  if (device.device_type == kDLCUDA) LoadCudaRuntime();

  // 2. Inputs: names, then files, shapes, dtypes.
  std::map<std::string, std::string> given;
  for (const auto& kv : opt.inputs) {
    bool known = std::any_of(sig.inputs.begin(), sig.inputs.end(),
                             [&](const TensorSpec& s) { return s.name == kv.first; });
    if (!known) {
      std::string names;
      for (const auto& s : sig.inputs) names += (names.empty() ? "" : ", ") + s.name;
      throw UsageError("unknown input '" + kv.first + "' (model inputs: " + names + ")");
    }
    if (!given.emplace(kv.first, kv.second).second) {
      throw UsageError("input '" + kv.first + "' given more than once");
    }
  }
  for (const auto& spec : sig.inputs) {
    if (!given.count(spec.name) && opt.fill_mode.empty()) {
      throw UsageError("missing input '" + spec.name + "' (pass --input " + spec.name +
                       "=FILE.npy)");
    }
  }
  std::vector<ffi::Tensor> inputs;
  const DLDevice cpu{kDLCPU, 0};
  std::mt19937_64 rng(opt.seed);
  for (const auto& spec : sig.inputs) {
    const DTypeInfo* want = DTypeByName(spec.dtype);
    if (!want) {
      throw UsageError("input '" + spec.name + "' has dtype " + spec.dtype +
                       ", which this runner cannot feed from .npy");
    }
    auto it = given.find(spec.name);
    const std::string file = it == given.end() ? std::string("--fill-mode ") + opt.fill_mode
                                               : it->second;
    NpyArray arr = it == given.end() ? FillInput(spec, *want, opt.fill_mode, &rng)
                                     : ReadNpy(file);
    if (want != arr.dtype) {
      throw UsageError("input '" + spec.name + "' expects dtype " + spec.dtype + ", got " +
                       arr.dtype->name + " from " + file);
    }
    bool shape_ok = spec.any_rank || arr.shape.size() == spec.shape.size();
    for (size_t k = 0; shape_ok && !spec.any_rank && k < spec.shape.size(); ++k) {
      shape_ok = spec.shape[k] < 0 || spec.shape[k] == arr.shape[k];
    }
    if (!shape_ok) {
      throw UsageError("input '" + spec.name + "' expects shape " + SpecShapeToString(spec) +
                       ", got " + ShapeToString(arr.shape) + " from " + file);
    }
    ffi::Tensor t = ffi::Tensor::FromNDAlloc(AlignedAlloc(), ffi::ShapeView(arr.shape.data(),
                                                                            arr.shape.size()),
                                             ToDL(*want), cpu);
    if (!arr.data.empty()) std::memcpy(t.data_ptr(), arr.data.data(), arr.data.size());
    inputs.push_back(std::move(t));
  }

  // 3. Load the VM.
  ffi::Function main_fn;
  try {
    ffi::Module lib = ffi::Module::LoadFromFile(artifact);
    ffi::Optional<ffi::Function> load = lib->GetFunction("vm_load_executable", true);
    if (!load.has_value()) {
      throw UsageError("not a Relax VM artifact (no vm_load_executable): " + opt.artifact);
    }
    ffi::Module vm = (*load)().cast<ffi::Module>();
    ffi::Optional<ffi::Function> init = vm->GetFunction("vm_initialization", false);
    if (!init.has_value()) throw RunError("VM has no vm_initialization");
    // (device type, device id, allocator type) for the device and for the host;
    // allocator type 2 = pooled.
    (*init)(static_cast<int>(device.device_type), 0, 2, static_cast<int>(kDLCPU), 0, 2);
    ffi::Optional<ffi::Function> f = vm->GetFunction("main", false);
    if (!f.has_value()) throw UsageError("artifact has no function 'main'");
    main_fn = *f;
  } catch (const ffi::Error& e) {
    throw UsageError("cannot load artifact " + opt.artifact + ": " + e.kind() + ": " +
                     e.message());
  }

  // 4. Run: warmup, then timed runs; keep the last result. On a GPU the inputs move there
  // once, outside the clock, and every run ends with a device synchronization.
  // (The CPU's stream sync is a no-op; calling it there too keeps this path tested.)
  const ffi::Function sync = GlobalFunction("runtime.Device_StreamSync");  // (device, stream)
  if (device.device_type != kDLCPU) {
    try {
      for (ffi::Tensor& t : inputs) t = CopyTo(t, device);
    } catch (const ffi::Error& e) {
      throw RunError("copying the inputs to " + device_name + " failed: " + e.kind() + ": " +
                     e.message());
    }
  }
  std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
  ffi::Any result;
  auto call = [&]() {
    result = ffi::Any();
    main_fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
    sync(device, static_cast<int64_t>(0));  // 0: the default stream, which the VM launches on
  };
  std::vector<double> times_ms;
  try {
    for (int k = 0; k < opt.warmup; ++k) call();
    for (int k = 0; k < opt.repeat; ++k) {
      auto t0 = std::chrono::steady_clock::now();
      call();
      auto t1 = std::chrono::steady_clock::now();
      times_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
  } catch (const ffi::Error& e) {
    throw RunError("running main failed: " + e.kind() + ": " + e.message());
  }

  // 5. Outputs.
  std::vector<ffi::Tensor> outs;
  FlattenResult(result, &outs);
  if (device.device_type != kDLCPU) {
    try {
      for (ffi::Tensor& t : outs) {
        if (t.device().device_type != kDLCPU) t = CopyTo(t, DLDevice{kDLCPU, 0});
      }
    } catch (const ffi::Error& e) {
      throw RunError("copying the outputs back from " + device_name + " failed: " + e.kind() +
                     ": " + e.message());
    }
  }
  if (outs.size() != sig.outputs.size()) {
    throw RunError("main returned " + std::to_string(outs.size()) + " tensor(s), the signature " +
                   "declares " + std::to_string(sig.outputs.size()));
  }
  fs::create_directories(opt.output_dir, ec);
  if (!fs::is_directory(opt.output_dir, ec)) {
    throw UsageError("cannot create output directory: " + opt.output_dir);
  }
  std::set<std::string> used;
  for (size_t k = 0; k < outs.size(); ++k) {
    const ffi::Tensor& t = outs[k];
    const TensorSpec& spec = sig.outputs[k];
    if (t.device().device_type != kDLCPU) throw RunError("output '" + spec.name + "' is not on CPU");
    if (!t.IsContiguous()) throw RunError("output '" + spec.name + "' is not contiguous");
    const DTypeInfo* dt = DTypeByDL(t.dtype());
    if (!dt) {
      throw RunError("output '" + spec.name + "' has dtype " + DLToString(t.dtype()) +
                     ", which .npy cannot store");
    }
    std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
    size_t numel = 1;
    for (int64_t d : shape) numel *= static_cast<size_t>(d);
    std::vector<char> bytes(numel * dt->bits / 8);
    const char* src = static_cast<const char*>(t.data_ptr()) + t.byte_offset();
    if (t.dtype().code == kDLUInt && t.dtype().bits == 1) {
      // 1-bit bools are stored one per byte by TVM on CPU.
      for (size_t j = 0; j < numel; ++j) bytes[j] = src[j] ? 1 : 0;
    } else if (!bytes.empty()) {
      std::memcpy(bytes.data(), src, bytes.size());
    }
    std::string base = SanitizeFileName(spec.name);
    if (base.empty()) base = "output_" + std::to_string(k);
    std::string stem = base;
    for (int n = 1; used.count(stem); ++n) stem = base + "_" + std::to_string(n);
    used.insert(stem);
    fs::path path = fs::path(opt.output_dir) / (stem + ".npy");
    WriteNpy(path.string(), *dt, shape, bytes.data(), bytes.size());
    std::printf("output %s: %s %s -> %s\n", spec.name.c_str(), dt->name,
                ShapeToString(shape).c_str(), path.string().c_str());
  }

  Stats s = Summarize(times_ms);
  if (ffi::Optional<ffi::Function> num_threads = ffi::Function::GetGlobal("runtime.NumThreads")) {
    std::printf("threads: %d\n", (*num_threads)().cast<int>());
  }
  std::printf("latency_ms: median=%.3f min=%.3f mean=%.3f repeat=%d\n", s.median, s.min, s.mean,
              opt.repeat);
  std::fflush(stdout);
  return 0;
}

}  // namespace accelc_run

int main(int argc, char** argv) {
  using namespace accelc_run;
  try {
    return Run(argc, argv);
  } catch (const UsageError& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", OneLine(e.what()).c_str());
    return 2;
  } catch (const RunError& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", OneLine(e.what()).c_str());
    return 1;
  } catch (const tvm::ffi::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s: %s\n", e.kind().c_str(), OneLine(e.message()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", OneLine(e.what()).c_str());
    return 1;
  }
}
