"""The limit: DuckDB alone doing the equivalent work, in SQL.

`read_csv` of both files (dialect and columns given, so nothing is guessed), the same
checks written as SQL, the publish, the lesson's join, and the ML SQL. No connector, no
GX, no dbt, no Dagster: how fast the warehouse itself can do it on this machine.
Usage: python -m benchmarks.limit <projects.csv> <tags.csv> <database>; prints JSON.
"""

import json
import sys
import time

import duckdb

from mlstack_assets.ml.assets import default_split
from mlstack_assets.ml.sql import ml_dataset_sql, ml_splits_sql, split_counts_sql
from mlstack_assets.quality.suites import known_tags

READ = """create or replace table staging.{name} as
select * from read_csv('{path}', header = true, delim = ',', quote = '"', escape = '"',
                       columns = {columns})"""
CHECKS = {
    "projects": [
        "select count(*) > 0 from staging.projects",
        "select count(*) = count(distinct id) from staging.projects",
        "select count(*) = count(id) and count(*) = count(created_on)"
        " and count(*) = count(title) and count(*) = count(description) from staging.projects",
        "select count(*) = 0 from staging.projects where try_cast(created_on as timestamp) is null",
        "select count(*) = 0 from (select title, description from staging.projects"
        " group by all having count(*) > 1)",
    ],
    "tags": [
        "select count(*) > 0 from staging.tags",
        "select count(*) = count(distinct id) and count(*) = count(id) and count(*) = count(tag)"
        " from staging.tags",
    ],
}


def main(projects: str, tags: str, database: str) -> None:
    conn = duckdb.connect(database)
    conn.execute("create schema if not exists staging; create schema if not exists main")
    seconds = {}
    started = time.perf_counter()
    conn.execute(
        READ.format(
            name="projects",
            path=projects,
            columns="{'id': 'BIGINT', "
            "'created_on': 'VARCHAR', 'title': 'VARCHAR', 'description': 'VARCHAR'}",
        )
    )
    conn.execute(READ.format(name="tags", path=tags, columns="{'id': 'BIGINT', 'tag': 'VARCHAR'}"))
    seconds["extract_load"] = time.perf_counter() - started

    started = time.perf_counter()
    for table, checks in CHECKS.items():
        for sql in checks:
            assert conn.execute(sql).fetchone()[0], (table, sql)
    tag_list = ", ".join(f"'{tag}'" for tag in known_tags())
    conn.execute(f"select count(*) from staging.tags where tag not in ({tag_list})").fetchone()
    seconds["audit"] = time.perf_counter() - started

    started = time.perf_counter()
    conn.execute("create or replace table main.projects as select * from staging.projects")
    conn.execute("create or replace table main.tags as select * from staging.tags")
    seconds["publish"] = time.perf_counter() - started

    started = time.perf_counter()
    conn.execute(
        "create or replace table main.labeled_projects as select p.id,"
        " cast(p.created_on as timestamp) as created_on, p.title, p.description, t.tag"
        " from main.projects p left join main.tags t on p.id = t.id"
    )
    seconds["transform"] = time.perf_counter() - started

    started = time.perf_counter()
    assert conn.execute(
        "select count(*) = count(distinct id) and count(*) = count(tag) from main.labeled_projects"
    ).fetchone()[0]
    seconds["checks"] = time.perf_counter() - started

    started = time.perf_counter()
    conn.execute(
        "create or replace table main.ml_dataset as "
        + ml_dataset_sql("main.labeled_projects", "duckdb", known_tags())
    )
    conn.execute(
        "create or replace table main.ml_splits as "
        + ml_splits_sql("main.ml_dataset", "duckdb", *default_split())
    )
    conn.execute(split_counts_sql("main.ml_splits")).fetchall()
    seconds["ml"] = time.perf_counter() - started
    conn.close()
    print(json.dumps(seconds))


if __name__ == "__main__":
    main(*sys.argv[1:4])
