#ifndef WSBRIDGE_CCRYPT_SHIM_H
#define WSBRIDGE_CCRYPT_SHIM_H
#include <crypt.h>
#endif
