-- The lesson's query: every project with its tag (projects LEFT JOIN tags on id).

with

projects as (

    select * from {{ ref('stg_mlops_course__projects') }}

),

tags as (

    select * from {{ ref('stg_mlops_course__tags') }}

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

select * from final
