#ifndef KHO_CZSTD_SHIM_H
#define KHO_CZSTD_SHIM_H
#include <zstd.h>
#endif
