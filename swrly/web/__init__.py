"""The generic web layer: what every app's pages and API share and no app owns.

The API's parser, error shape, pagination, strict serializers and schema, and the
error pages. It imports no app (tenants, runs, audit, custody): the apps import it.
"""
