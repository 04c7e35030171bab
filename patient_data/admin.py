from django.contrib import admin

from patient_data.models import CleanupEvent


@admin.register(CleanupEvent)
class CleanupEventAdmin(admin.ModelAdmin):
    """The audit trail, read-only: nobody can add, change or delete a row here."""

    list_display = (
        "created_at",
        "action",
        "reason",
        "source",
        "client_hint",
        "items_cleared",
        "session_ref",
    )
    list_filter = ("action", "reason", "source", "client_hint")
    search_fields = ("session_ref",)
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
