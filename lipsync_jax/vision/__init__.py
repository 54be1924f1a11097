"""Pretrained perception and image operations on faces, outside the generator:
`face_detection` (BlazeFace / Haar boxes), `face_mesh` (MediaPipe FaceMesh
under ai-edge-litert), `au_proxies` (action-unit proxies from the mesh),
`lip_landmarks` (FaceMesh lip tracks for the landmark sync expert),
`blending` (feathered paste and colour matching) and `lmd` (landmark
distance)."""
