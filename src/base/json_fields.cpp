#include "base/json_fields.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include "base/error.h"

namespace lsb {

int get_int(const nlohmann::json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) fail(where, "missing key '{}'", key);
  if (!it->is_number_integer()) fail(where, "key '{}' should be an integer, got {}", key, it->type_name());
  if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
    fail(where, "key '{}' value {} is out of range", key, it->dump());
  auto v = it->get<int64_t>();
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    fail(where, "key '{}' value {} is out of range", key, v);
  return static_cast<int>(v);
}

int get_int_or(const nlohmann::json& j, const char* key, int dflt, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  return get_int(j, key, where);
}

double get_number(const nlohmann::json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) fail(where, "missing key '{}'", key);
  if (!it->is_number()) fail(where, "key '{}' should be a number, got {}", key, it->type_name());
  return it->get<double>();
}

double get_number_or(const nlohmann::json& j, const char* key, double dflt, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  return get_number(j, key, where);
}

bool get_bool(const nlohmann::json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) fail(where, "missing key '{}'", key);
  if (!it->is_boolean()) fail(where, "key '{}' should be true or false, got {}", key, it->type_name());
  return it->get<bool>();
}

bool get_bool_or(const nlohmann::json& j, const char* key, bool dflt, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  return get_bool(j, key, where);
}

std::string get_string(const nlohmann::json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) fail(where, "missing key '{}'", key);
  if (!it->is_string()) fail(where, "key '{}' should be a string, got {}", key, it->type_name());
  return it->get<std::string>();
}

float to_float_checked(double v, const char* key, const std::string& where) {
  if (!std::isfinite(v) || std::fabs(v) > double(std::numeric_limits<float>::max()))
    fail(where, "key '{}' value {} is not a finite float", key, v);
  return static_cast<float>(v);
}

}  // namespace lsb
