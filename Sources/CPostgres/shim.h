#ifndef KHO_CPOSTGRES_SHIM_H
#define KHO_CPOSTGRES_SHIM_H
#include <libpq-fe.h>
#endif
