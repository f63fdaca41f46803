/* Private to db/: the type OIDs of the binary results db/ reads
 * (pg_type.h is not part of libpq-dev). */
#ifndef H2PG_DB_OID_H
#define H2PG_DB_OID_H

enum {
    DB_OID_BOOL = 16,
    DB_OID_NAME = 19,
    DB_OID_INT8 = 20,
    DB_OID_INT2 = 21,
    DB_OID_INT4 = 23,
    DB_OID_TEXT = 25,
    DB_OID_BPCHAR = 1042,
    DB_OID_VARCHAR = 1043,
    DB_OID_TIMESTAMP = 1114,
    DB_OID_TIMESTAMPTZ = 1184,
};

#endif
