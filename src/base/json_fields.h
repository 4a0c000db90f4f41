// Typed, checked access to fields of JSON objects read from files (config.json, .lsb metadata,
// scheme parameters): a missing key, a wrong type or an out-of-range value is an lsb::Error
// naming `where` and the key.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace lsb {

int get_int(const nlohmann::json& j, const char* key, const std::string& where);
int get_int_or(const nlohmann::json& j, const char* key, int dflt, const std::string& where);
double get_number(const nlohmann::json& j, const char* key, const std::string& where);
double get_number_or(const nlohmann::json& j, const char* key, double dflt, const std::string& where);
bool get_bool(const nlohmann::json& j, const char* key, const std::string& where);
bool get_bool_or(const nlohmann::json& j, const char* key, bool dflt, const std::string& where);
std::string get_string(const nlohmann::json& j, const char* key, const std::string& where);
// v as a float; throws when it is not finite or outside float's range.
float to_float_checked(double v, const char* key, const std::string& where);

}  // namespace lsb
