with

source as (

    select id, tag
    from {{ source('mlops_course', 'tags') }}

),

renamed as (

    select
        cast(id as {{ dbt.type_bigint() }}) as id,
        cast(tag as {{ dbt.type_string() }}) as tag

    from source

)

select id, tag from renamed
