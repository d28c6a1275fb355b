with

source as (

    select id, created_on, title, description
    from {{ source('mlops_course', 'projects') }}

),

renamed as (

    select
        cast(id as {{ dbt.type_bigint() }}) as id,
        cast(created_on as {{ dbt.type_timestamp() }}) as created_on,
        cast(title as {{ dbt.type_string() }}) as title,
        cast(description as {{ dbt.type_string() }}) as description

    from source

)

select id, created_on, title, description from renamed
