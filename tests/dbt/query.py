"""Runs one SQL query on the warehouse tests/dbt.rs built and prints the
rows as one JSON array of objects (timestamps and dates as ISO strings).

    query.py duckdb PATH SQL
    query.py postgres URL SQL
    query.py postgres-exec URL SQL    (statements without rows, committed)
"""
import datetime
import decimal
import json
import sys


def plain(v):
    if isinstance(v, (datetime.datetime, datetime.date)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return float(v)
    return v


def main():
    kind, where, sql = sys.argv[1:4]
    if kind == "duckdb":
        import duckdb

        con = duckdb.connect(where, read_only=True)
        cur = con.execute(sql)
    elif kind in ("postgres", "postgres-exec"):
        import psycopg2

        con = psycopg2.connect(where)
        cur = con.cursor()
        cur.execute(sql)
        if kind == "postgres-exec":
            con.commit()
            json.dump([], sys.stdout)
            return
    else:
        sys.exit(f"unknown warehouse {kind!r}")
    names = [d[0] for d in cur.description]
    rows = [{n: plain(v) for n, v in zip(names, row)} for row in cur.fetchall()]
    json.dump(rows, sys.stdout)


main()
