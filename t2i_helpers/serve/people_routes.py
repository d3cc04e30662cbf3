"""The REST API's people routes: list, name, merge and forget the people found in the photos (notebook 07).

    GET    /people                     every person: id, name, photos, faces, thumbnail_url (empty: no faces read)
    GET    /people/{id}/thumbnail      a small JPEG of the person's surest face, cut from its indexed photo
    POST   /people/{id}/name           {"name": "Anna"}: name (or rename) a person; 409 if another has the name
    POST   /people/{id}/merge          {"into": 3}: the person's faces become person 3's; 409 if both are in a photo
    DELETE /people/{id}                forget a person: its faces, embeddings and name (the photos stay)
    GET    /people/{id}/faces          the person's faces, surest first: id, photo_id, box, score, image_url
    POST   /faces/{id}/remove          the face is not that person: a person of its own, never grouped with it again

Like the other routes they need the API key when the server has one, and writes take the service's write lock.
A person's crop is made from its photo only if the photo's bytes still hash to the photo's id (`face_thumbnail`),
so a file swapped after indexing is never served.

Example:
    >>> httpx.post(url + "/people/3/name", json={"name": "Anna"}).json()["name"]
    'Anna'
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Response
from fastapi import Path as PathParam

from ..data.images import ImageError
from ..engine import SearchEngine
from ..pipelines.people import Person, get_person
from ..store.face_store import PersonError
from .schemas import MAX_PERSON_ID, FaceOut, ForgottenOut, MergeIn, NameIn, PersonOut, face_out, person_out
from .service import Service

FaceId = Annotated[int, PathParam(ge=0, le=(1 << 63) - 1, description="the face's id, from GET /people/{id}/faces")]
PersonId = Annotated[int, PathParam(ge=0, le=MAX_PERSON_ID, description="the person's id, from GET /people")]


def people_routes(service: Service) -> APIRouter:
    """GET /people, GET /people/{id}/thumbnail, POST /people/{id}/name and /merge, DELETE /people/{id}."""
    engine, router = service.engine, APIRouter(tags=["people"], dependencies=service.keyed)
    jpeg = {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}

    @router.get(
        "/people",
        response_model=list[PersonOut],
        responses=service.errors(503),
        summary="List people",
    )
    def list_people() -> list[PersonOut]:
        """Every person found in the photos, most photos first; empty until `t2i index FOLDER --faces` ran."""
        try:
            return [person_out(p) for p in engine.people()]
        except PersonError:  # no faces were read yet: no one to list
            return []

    @router.get(
        "/people/{person_id}/thumbnail",
        response_class=Response,
        responses={200: {"content": jpeg}, **service.errors(404, 422, 503)},
        summary="Get a person's face",
    )
    def get_person_thumbnail(person_id: PersonId) -> Response:
        """A small JPEG of the person's surest face (its box and a margin), cut from its photo on first use."""
        person = _person(engine, person_id)
        try:
            crop = engine.face_thumbnail(person)
        except ImageError as err:
            raise HTTPException(404, f"person {person_id}'s face: {err}") from err
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}  # a merge may change the face
        return Response(crop.read_bytes(), media_type="image/jpeg", headers=headers)

    @router.post(
        "/people/{person_id}/name",
        response_model=PersonOut,
        responses={200: {"links": _links("$response.body#/id")}, **service.errors(400, 404, 409, 422, 503)},
        summary="Name a person",
    )
    def name_person(person_id: PersonId, body: NameIn) -> PersonOut:
        """Name or rename a person; then `GET /search?person=NAME` finds its photos."""
        with service.writing:
            _person(engine, person_id)
            try:
                engine.name_person(person_id, body.name)
            except PersonError as err:  # the name is another person's
                raise HTTPException(409, str(err)) from err
            except ValueError as err:
                raise HTTPException(422, str(err)) from err
            return person_out(_person(engine, person_id))

    @router.post(
        "/people/{person_id}/merge",
        response_model=PersonOut,
        responses=service.errors(400, 404, 409, 422, 503),
        summary="Merge a person into another",
    )
    def merge_person(person_id: PersonId, body: MergeIn) -> PersonOut:
        """The person's faces become `into`'s (who keeps its name, or takes this one's); refused if both are in
        one photo, or if they are one person already."""
        with service.writing:
            _person(engine, person_id)
            _person(engine, body.into)
            try:
                engine.merge_people(person_id, body.into)
            except PersonError as err:
                raise HTTPException(409, str(err)) from err
            return person_out(_person(engine, body.into))

    @router.get(
        "/people/{person_id}/faces",
        response_model=list[FaceOut],
        responses=service.errors(404, 422, 503),
        summary="List a person's faces",
    )
    def list_faces(person_id: PersonId) -> list[FaceOut]:
        """The person's faces, surest first, each with the photo it is in."""
        try:
            return [face_out(f) for f in engine.faces_of(person_id)]
        except PersonError as err:
            raise HTTPException(404, str(err)) from err

    @router.post(
        "/faces/{face_id}/remove",
        response_model=PersonOut,
        responses={200: {"links": _links("$response.body#/id")}, **service.errors(404, 409, 422, 503)},
        summary="Take a face out of its person",
    )
    def remove_face(face_id: FaceId) -> PersonOut:
        """The face becomes a person of its own, never grouped again with the person it was taken from (409 if it
        is alone in its person already); the new person."""
        with service.writing:
            if not engine.store.faces.exists() or not engine.store.faces.faces(f"id == {face_id}"):
                raise HTTPException(404, f"there is no face {face_id}: GET /people/{{id}}/faces lists them")
            try:
                return person_out(_person(engine, engine.remove_face(face_id)))
            except PersonError as err:
                raise HTTPException(409, str(err)) from err

    @router.delete(
        "/people/{person_id}",
        response_model=ForgottenOut,
        responses=service.errors(404, 422, 503),
        summary="Forget a person",
    )
    def forget_person(person_id: PersonId) -> ForgottenOut:
        """Delete a person's faces, embeddings, crops and name; the photos stay, and are not read for faces again."""
        with service.writing:
            _person(engine, person_id)
            return ForgottenOut(id=person_id, faces=engine.forget_person(person_id))

    return router


def _links(person_id: str) -> dict:
    """OpenAPI links from a response that names a person (at the runtime expression `person_id`) to its routes."""
    operations = {"GetThumbnail": "get_person_thumbnail", "Name": "name_person", "Merge": "merge_person",
                  "Faces": "list_faces", "Forget": "forget_person"}  # fmt: skip
    return {link: {"operationId": op, "parameters": {"person_id": person_id}} for link, op in operations.items()}


def _person(engine: SearchEngine, person_id: int) -> Person:
    """The person, or a 404 saying there is none (or no faces were read)."""
    try:
        return get_person(engine.store.faces, person_id)
    except PersonError as err:
        raise HTTPException(404, str(err)) from err
