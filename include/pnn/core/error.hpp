// pnn/core/error.hpp: the exception types pnn throws and the PNN_CHECK macro that builds their messages.
//
// Every runtime error names what was wrong (a shape, a file, a rank) so a user can act on it without a
// debugger: bad input is reported, never silently accepted.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace pnn {

// Base of every exception pnn throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Tensor shapes that do not fit together at run time (batch sizes, buffer sizes).
class ShapeError : public Error {
 public:
  using Error::Error;
};

// A file that cannot be read or written, or whose contents are invalid.
class IoError : public Error {
 public:
  using Error::Error;
};

// An invalid argument or option (a learning rate of zero, a batch of size zero).
class ArgumentError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}
}  // namespace detail

}  // namespace pnn

// PNN_CHECK(condition, ExceptionType, message parts...): throws ExceptionType with the streamed parts.
#define PNN_CHECK(condition, ExceptionType, ...)                               \
  do {                                                                         \
    if (!(condition)) throw ExceptionType(::pnn::detail::concat(__VA_ARGS__)); \
  } while (false)
