-- The lesson's query: every project with its tag (projects LEFT JOIN tags on id).
-- Columns are listed, not `*`: schema drift upstream cannot add columns silently, and
-- Dagster can trace each column back to its source (column-level lineage).

with

projects as (

    select id, created_on, title, description
    from {{ ref('stg_mlops_course__projects') }}

),

tags as (

    select id, tag
    from {{ ref('stg_mlops_course__tags') }}

),

final as (

    select
        projects.id,
        projects.created_on,
        projects.title,
        projects.description,
        tags.tag

    from projects
    left join tags on projects.id = tags.id

)

select id, created_on, title, description, tag from final
