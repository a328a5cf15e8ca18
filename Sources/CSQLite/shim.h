#ifndef KHO_CSQLITE_SHIM_H
#define KHO_CSQLITE_SHIM_H
#include <sqlite3.h>
#endif
