from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from segmentation import api, views

api_v1 = [
    path("projects/", api.projects),
    path("projects/<int:project_id>/", api.project_detail),
    path("projects/<int:project_id>/members/", api.project_members),
    path("projects/<int:project_id>/images/", api.project_images),
    path("projects/<int:project_id>/labels/", api.project_labels),
    path("projects/<int:project_id>/export", api.project_export),
    path("images/<int:image_id>/", api.image_detail),
    path("images/<int:image_id>/file", api.image_file),
    path("images/<int:image_id>/thumbnail", api.image_thumbnail),
    path("images/<int:image_id>/embedding", api.image_embedding),
    path("images/<int:image_id>/segment", api.image_segment),
    path("images/<int:image_id>/masks/", api.image_masks),
    path("masks/<int:mask_id>/", api.mask_detail),
    path("masks/<int:mask_id>/png", api.mask_png),
    path("models/<str:model_key>/decoder.onnx", api.model_decoder),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("projects/<int:project_id>/", views.project_page, name="project"),
    path("images/<int:image_id>/", views.annotator_page, name="annotator"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", views.signup, name="signup"),
    path("healthz", views.healthz),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
]
