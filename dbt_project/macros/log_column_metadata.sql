{#
  A post-hook of every model (dbt_project.yml): once the model is built, its columns and
  the columns of each relation it reads, as one JSON line of dbt's log. dagster-dbt's
  event stream turns that line (its `relation_name` / `columns` / `parents` shape) into
  the materialization's column schema and column-level lineage, so the Dagster process
  never opens a dbt adapter of its own. Returns no SQL.
#}
{% macro log_column_metadata() %}
  {%- if execute -%}
    {%- set parents = {} -%}
    {%- for unique_id in model.depends_on.nodes -%}
      {%- set node = graph.nodes.get(unique_id) or graph.sources.get(unique_id) -%}
      {%- set name = node.identifier if node.resource_type == 'source' else node.alias -%}
      {%- set parent = api.Relation.create(database=node.database, schema=node.schema, identifier=name) -%}
      {%- do parents.update({parent.render(): {'columns': column_types(parent)}}) -%}
    {%- endfor -%}
    {%- set report = {'relation_name': this.render(), 'columns': column_types(this), 'parents': parents} -%}
    {%- do log(tojson(report), info=true) -%}
  {%- endif -%}
{% endmacro %}

{% macro column_types(relation) %}
  {%- set types = {} -%}
  {%- for column in adapter.get_columns_in_relation(relation) -%}
    {%- do types.update({column.name: {'data_type': column.data_type}}) -%}
  {%- endfor -%}
  {{ return(types) }}
{% endmacro %}
