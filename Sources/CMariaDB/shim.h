#ifndef KHO_CMARIADB_SHIM_H
#define KHO_CMARIADB_SHIM_H
#include <mysql.h>
#include <errmsg.h>
#include <mysqld_error.h>
#endif
