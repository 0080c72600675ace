"""Reads, scoped to what the user may see. An outsider gets 404 (Http404), never a hint that it exists."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, Q, QuerySet
from django.http import Http404

from .models import Image, Mask, Membership, Project, Role

AnyUser = AbstractBaseUser | AnonymousUser
WRITE_ROLES = (Role.OWNER, Role.EDITOR)


class NotAllowed(Exception):
    """A member whose role does not allow this write (403)."""


def user_id(user: AnyUser) -> int:
    """The signed-in user's id; an anonymous user sees nothing (404)."""
    if not user.is_authenticated or user.pk is None:
        raise Http404("not found")
    return int(user.pk)


def projects_for(user: AnyUser) -> QuerySet[Project]:
    return (
        Project.objects.filter(memberships__user_id=user_id(user))
        .annotate(
            image_count=Count("images", distinct=True),
            ready_count=Count("images", filter=Q(images__status="ready"), distinct=True),
        )
        .order_by("-created_at", "-id")
    )


def roles_of(user: AnyUser) -> dict[int, str]:
    """project id -> the user's role there."""
    return dict(Membership.objects.filter(user_id=user_id(user)).values_list("project_id", "role"))


def role_in(user: AnyUser, project_id: int) -> str:
    """The user's role in the project; 404 when not a member."""
    if not user.is_authenticated:
        raise Http404("not found")
    role = Membership.objects.filter(project_id=project_id, user_id=user.pk).values_list("role", flat=True).first()
    if role is None:
        raise Http404("not found")
    return role


def require_write(role: str) -> None:
    if role not in WRITE_ROLES:
        raise NotAllowed("viewers cannot change this project")


def project_for(user: AnyUser, project_id: int, *, write: bool = False) -> tuple[Project, str]:
    role = role_in(user, project_id)
    if write:
        require_write(role)
    return Project.objects.get(pk=project_id), role


def image_for(user: AnyUser, image_id: int, *, write: bool = False) -> tuple[Image, str]:
    image = Image.objects.select_related("project").filter(pk=image_id).first()
    if image is None:
        raise Http404("not found")
    role = role_in(user, image.project_id)
    if write:
        require_write(role)
    return image, role


def mask_for(user: AnyUser, mask_id: int, *, write: bool = False) -> Mask:
    mask = Mask.objects.select_related("image").filter(pk=mask_id).first()
    if mask is None:
        raise Http404("not found")
    role = role_in(user, mask.image.project_id)
    if write:
        require_write(role)
    return mask


def members_of(project: Project) -> QuerySet[Membership]:
    return project.memberships.select_related("user").order_by("user__username")


def neighbours(image: Image) -> tuple[int | None, int | None]:
    """Previous and next image ids in the project, for keyboard navigation."""
    siblings = Image.objects.filter(project_id=image.project_id)
    previous = siblings.filter(id__lt=image.id).order_by("-id").values_list("id", flat=True).first()
    following = siblings.filter(id__gt=image.id).order_by("id").values_list("id", flat=True).first()
    return previous, following
