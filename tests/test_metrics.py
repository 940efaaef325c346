"""Metrics: hand-checked values, paper-table values, missing weight files, and the mini backends on real images."""
import numpy as np
import pytest
import torch

from unlearnkit import metrics as M
from unlearnkit.metrics import classification, clip_score, fid, lpips_distance, nsfw
from unlearnkit.worlds.mini import WEIGHTS_DIR
from unlearnkit.worlds.mini import catalogue as cat
from unlearnkit.worlds.mini import render

needs_shipped_mini_weights = pytest.mark.skipif(
    not (WEIGHTS_DIR / "pipeline" / "model_index.json").is_file(),
    reason=f"shipped mini-world weights are absent ({WEIGHTS_DIR / 'pipeline' / 'model_index.json'})",
)


def rendered(scene_fn, args_list, seed=0):
    rng = np.random.default_rng(seed)
    scenes = [scene_fn(rng, *args) for args in args_list]
    return np.stack([render.render(s) for s in scenes]), scenes


# --- classification --------------------------------------------------------------------------------------------
def test_perfect_classifier_scores_one_everywhere():
    target = ["tench", "church", "parachute"] * 4
    row = M.classifier_accuracy(target, target, erased=["tench"])
    assert row == {"tench": 1.0, "church": 1.0, "parachute": 1.0, "Total Acc": 1.0, "Others Acc": 1.0}


def test_total_and_others_accuracy_on_a_hand_case():
    target = ["a"] * 4 + ["b"] * 2 + ["c"] * 5
    predicted = ["a", "x", "x", "x"] + ["b", "b"] + ["c", "c", "x", "x", "x"]
    row = M.classifier_accuracy(predicted, target, erased=["a", "b"], classes=["c", "b", "a"])
    assert list(row)[:3] == ["c", "b", "a"]
    assert row["a"] == 0.25 and row["b"] == 1.0 and row["c"] == 0.4
    assert row["Total Acc"] == pytest.approx((0.25 + 1.0) / 2)  # mean of per-class accuracies, as SM Table 1
    assert row["Others Acc"] == pytest.approx(0.4)
    assert np.isnan(M.classifier_accuracy(predicted, target)["Total Acc"])
    with pytest.raises(ValueError, match="have no images"):
        M.classifier_accuracy(predicted, target, erased=["zebra"])
    assert M.superclass_hit_rate(["fish", "dog", "fish"], ["fish", "fish", "fish"]) == pytest.approx(2 / 3)


def test_sm_table_1_total_acc_is_the_mean_of_its_columns():
    ours = [0.01, 0.00, 0.05, 0.03, 0.17, 0.00, 0.41, 0.05, 0.12, 0.00]  # SM Table 1, "Ours"
    target = [c for c in M.IMAGENETTE_CLASSES for _ in range(100)]
    predicted = [c if i < round(100 * acc) else "other" for c, acc in zip(M.IMAGENETTE_CLASSES, ours)
                 for i in range(100)]
    row = M.classifier_accuracy(predicted, target, erased=M.IMAGENETTE_CLASSES)
    assert round(row["Total Acc"], 3) == 0.084


def test_imagenette_indices_are_torchvisions_categories():
    from torchvision.models import ResNet50_Weights

    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    assert [categories[i] for i in M.IMAGENETTE_IMAGENET_INDEX.values()] == list(M.IMAGENETTE_CLASSES)


def test_resnet50_classifier_from_a_local_file_maps_indices_to_imagenette(tmp_path):
    import torchvision

    path = tmp_path / "resnet50.pth"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet50().state_dict(), path)
    for match in ("exact_index", "substring"):
        classifier = M.ResNet50Classifier(path, match=match)
        assert classifier.label_of(491) == "chain saw" and classifier.label_of(217) == "English springer"
        assert classifier.label_of(713) == "photocopier"
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    predicted = classifier.predict(images)
    assert len(predicted) == 2 and all(p in classifier.categories for p in predicted)


# --- harmonic means, CLIP gaps, ‖Δθ‖_p ----------------------------------------------------------------------
def test_celebrity_harmonic_mean_known_values_and_ant_table_2():
    assert M.celebrity_harmonic_mean(0.0, 1.0) == 1.0
    assert M.celebrity_harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    assert M.celebrity_harmonic_mean(1.0, 0.9) == 0.0
    # ANT Table 2 (Acc_e, Acc_p, H_c): Ours, MACE, ESD-x; Table 4 config E
    for acc_e, acc_p, h_c in [(0.0430, 0.8807, 0.9173), (0.0430, 0.8456, 0.8979), (0.2784, 0.2793, 0.4027),
                              (0.0910, 0.8545, 0.8809)]:
        assert M.celebrity_harmonic_mean(acc_e, acc_p) == pytest.approx(h_c, abs=5e-5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.celebrity_harmonic_mean(1.2, 0.5)


def test_identity_metrics_with_a_plugged_recogniser():
    images = np.zeros((4, 8, 8, 3), np.uint8)
    answers = iter([(["a", "x", "b", "b"], [True, True, False, True]), (["c", "d", "d", "e"], [True] * 4)])
    recogniser = M.PluggableIdentityRecogniser(lambda imgs: next(answers))
    row = M.identity_metrics(recogniser, images, ["a", "b", "b", "b"], images, ["c", "d", "e", "e"])
    assert row["Acc_e"] == pytest.approx(2 / 3)  # over the 3 images with a face (GCD)
    assert row["Acc_p"] == pytest.approx(0.75)
    assert row["H_c"] == pytest.approx(M.celebrity_harmonic_mean(2 / 3, 0.75))
    assert row["Face Ratio"] == pytest.approx(7 / 8)
    assert M.top1_accuracy(["a", "b"], ["a", "a"], [True, False], over="all") == 0.5
    with pytest.raises(ValueError, match="GIPHY Celebrity Detector"):
        M.PluggableIdentityRecogniser()


def test_style_erasure_gap_known_values_and_ant_table_3():
    assert M.style_erasure_gap(22.59, 28.58) == pytest.approx(5.99)  # ANT Table 3, MACE
    assert M.style_erasure_gap(29.63, 28.90) == pytest.approx(-0.73)  # FMN
    row = M.erase_preserve_clip([20.0, 22.0], [27.0, 29.0, 28.0])
    assert row == pytest.approx({"CLIP_e": 21.0, "CLIP_p": 28.0, "H_a": 7.0})


def test_delta_norm_on_a_hand_case():
    original = {"a": torch.zeros(2, 2), "b": torch.ones(3), "c": torch.ones(1)}
    edited = {"a": torch.tensor([[1.0, -2.0], [0.0, 0.5]]), "b": torch.tensor([1.0, 0.0, 1.0]), "c": torch.ones(1)}
    # ‖Δθ‖₁ = 3.5 + 1 = 4.5 over M = 2 modified tensors (c is unchanged)
    assert M.delta_norm(edited, original) == pytest.approx(2.25)
    assert sorted(M.weight_deltas(edited, original)) == ["a", "b"]
    assert M.delta_norm({"a": torch.tensor([1.0, -1.0]), "b": torch.tensor([4.0])}) == pytest.approx(3.0)
    assert M.delta_norm(original, original) == 0.0
    with pytest.raises(ValueError, match="changed shape"):
        M.delta_norm({"a": torch.zeros(3)}, {"a": torch.zeros(2)})


# --- FID and LPIPS on constructed inputs ---------------------------------------------------------------------
def test_frechet_distance_of_feature_statistics():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 8))
    stats = M.FeatureStatistics.from_features(features)
    assert M.compute_fid(stats, stats) == pytest.approx(0.0, abs=1e-8)
    shifted = M.FeatureStatistics.from_features(features + 1.0)
    assert M.compute_fid(stats, shifted) == pytest.approx(8.0, rel=1e-6)  # ‖Δμ‖² with equal covariances


def test_feature_statistics_round_trip(tmp_path):
    stats = M.FeatureStatistics.from_features(np.random.default_rng(1).normal(size=(20, 3)))
    loaded = M.FeatureStatistics.load(stats.save(tmp_path / "coco.npz"))
    assert loaded.count == 20 and np.array_equal(loaded.mu, stats.mu) and np.array_equal(loaded.sigma, stats.sigma)


def test_alexnet_lpips_loads_a_local_backbone_and_measures_pairs(tmp_path):
    import torchvision

    path = tmp_path / "alexnet.pth"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = torchvision.models.alexnet().features.state_dict()
    torch.save({f"features.{k}": v for k, v in state.items()}, path)
    backend = M.AlexNetLPIPS(path)
    assert torch.equal(getattr(backend.model.net.slice2, "3").weight, state["3.weight"])
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8) for _ in range(2))
    assert M.mean_lpips(a, a, backend)["LPIPS"] == 0.0
    assert M.mean_lpips(a, b, backend)["LPIPS"] > 0.0


# --- NudeNet counts --------------------------------------------------------------------------------------------
def test_nudity_counts_from_constructed_scores_in_both_modes():
    labels = ("chest", "belly")
    scores = torch.tensor([[0.9, 0.1], [0.6, 0.7], [0.59, 0.0], [0.2, 0.95]])
    detections = nsfw.detections_from_scores(scores, labels, image_size=(32, 32))
    for mode in nsfw.COUNT_MODES:  # one region per label: both modes agree
        counts = M.count_nudity(detections, labels, count=mode)
        assert counts.counts == {"chest": 2, "belly": 2} and counts.total == 4  # 0.6 counts, 0.59 does not
    assert counts.flagged.tolist() == [True, True, False, True]
    assert [len(b) for b in counts.boxes_per_image] == [1, 2, 0, 1]
    assert counts.boxes_per_image[0].tolist() == [[0, 0, 32, 32]]


def test_nudity_counts_detections_versus_images():
    D = M.Detection
    per_image = [
        [D("FEET_EXPOSED", 0.8, (0, 0, 5, 5)), D("FEET_EXPOSED", 0.7, (10, 10, 15, 15)),
         D("FACE_FEMALE", 0.99, (1, 1, 4, 4)), D("BELLY_EXPOSED", 0.3, (0, 0, 9, 9))],
        [D("FEET_EXPOSED", 0.65, (2, 2, 3, 3)), D("ANUS_EXPOSED", 0.61, (5, 5, 8, 8))],
        [],
    ]
    by_detection = M.count_nudity(per_image, M.NudeNetDetector.labels, count="detections")
    by_image = M.count_nudity(per_image, M.NudeNetDetector.labels, count="images")
    assert by_detection.counts["FEET_EXPOSED"] == 3 and by_image.counts["FEET_EXPOSED"] == 2
    assert by_detection.total == 4 and by_image.total == 3
    assert by_detection.counts["BELLY_EXPOSED"] == 0  # below 0.6; FACE_FEMALE is not a counted label
    row = by_image.row()
    assert row["Feet"] == 2 and row["Anus"] == 1 and row["Total"] == 3 and len(row) == 10
    assert by_detection.boxes_per_image[0].tolist() == [[0, 0, 5, 5], [10, 10, 15, 15]]
    with pytest.raises(ValueError, match="count=.boxes. is not accepted"):
        M.count_nudity(per_image, ["FEET_EXPOSED"], count="boxes")
    sexual = M.count_nudity([[D("FEMALE_BREAST_EXPOSED", 0.9, (0, 0, 1, 1)), D("MALE_GENITALIA_EXPOSED", 0.7,
                                                                              (0, 0, 1, 1))],
                             [D("FEMALE_BREAST_EXPOSED", 0.8, (0, 0, 1, 1)), D("FEET_EXPOSED", 0.9, (0, 0, 1, 1))]],
                            M.NudeNetDetector.labels).subset_row(M.NudeNetDetector.sexual_labels)
    # SM Table 4: breasts and genitalia (F, M) only — the feet detection is not in its Total
    assert sexual == {"Breasts (F)": 2, "Genitalia (F)": 0, "Breasts (M)": 0, "Genitalia (M)": 1, "Total": 3}


def test_nudenet_exposed_labels_are_nudenets_own():
    nudenet = pytest.importorskip("nudenet.nudenet")
    assert set(M.NUDENET_EXPOSED_LABELS) <= set(getattr(nudenet, "__labels"))
    assert len(M.NUDENET_EXPOSED_LABELS) == 9 and all(k.endswith("_EXPOSED") for k in M.NUDENET_EXPOSED_LABELS)


# --- missing weight files ------------------------------------------------------------------------------------
@pytest.mark.parametrize("build, source", [
    (lambda d: M.ResNet50Classifier(d / "resnet50.pth"), classification.RESNET50_WEIGHT_URLS["V1"]),
    (lambda d: M.ResNet50Classifier(d / "resnet50.pth", version="V2"), classification.RESNET50_WEIGHT_URLS["V2"]),
    (lambda d: M.OpenCLIPScorer(d / "ViT-B-32.pt"), clip_score.OPENAI_VIT_B_32_URL),
    (lambda d: M.InceptionFeatureExtractor(d / fid.INCEPTION_FILE_NAME), fid.INCEPTION_URL),
    (lambda d: M.AlexNetLPIPS(d / "alexnet.pth"), lpips_distance.ALEXNET_URL),
    (lambda d: M.NudeNetDetector(d / "320n.onnx"), "nudenet"),
], ids=["resnet50-v1", "resnet50-v2", "open_clip", "inception", "alexnet", "nudenet"])
def test_missing_weights_raise_file_not_found_naming_the_file(tmp_path, monkeypatch, build, source):
    def no_loading(*args, **kwargs):
        raise AssertionError("tried to load weights before checking the file")

    monkeypatch.setattr(torch, "load", no_loading)
    monkeypatch.setattr(torch.jit, "load", no_loading)
    if source == "nudenet":
        pytest.importorskip("nudenet")
    missing_dir = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as error:
        build(missing_dir)
    message = str(error.value)
    assert str(missing_dir) in message and source in message


def test_bad_backend_options_are_rejected_before_loading(tmp_path):
    with pytest.raises(ValueError, match="version"):
        M.ResNet50Classifier(tmp_path / "x.pth", version="V3")
    with pytest.raises(ValueError, match="match"):
        M.ResNet50Classifier(tmp_path / "x.pth", match="fuzzy")
    other_name = tmp_path / "inception.pt"
    other_name.write_bytes(b"")
    with pytest.raises(ValueError, match="inception-2015-12-05.pt"):
        M.InceptionFeatureExtractor(other_name)


# --- mini backends on the shipped mini world ----------------------------------------------------------------
@needs_shipped_mini_weights
def test_mini_object_classifier_recognises_rendered_objects(mini_world):
    images, scenes = rendered(render.object_scene, [(i % 10,) for i in range(30)])
    classifier = M.MiniObjectClassifier(mini_world)
    target = [cat.OBJECTS[s.object] for s in scenes]
    row = M.classifier_accuracy(classifier.predict(images), target, erased=cat.OBJECTS[:3], classes=cat.OBJECTS)
    assert list(row)[:10] == list(cat.OBJECTS)
    assert row["Total Acc"] >= 0.9 and row["Others Acc"] >= 0.9, row
    superclass = classifier.predict_superclass(images)
    assert M.superclass_hit_rate(superclass, [cat.SUPERCLASS[t] for t in target]) >= 0.9


@needs_shipped_mini_weights
def test_mini_clip_score_prefers_the_right_caption(mini_world):
    images, scenes = rendered(render.object_scene, [(i % 10,) for i in range(20)], seed=1)
    scorer = M.MiniCLIPScorer(mini_world)
    right = [f"a photo of a {cat.OBJECTS[s.object]}" for s in scenes]
    wrong = [f"a photo of a {cat.OBJECTS[(s.object + 5) % 10]}" for s in scenes]
    row = M.mean_clip_score(images, right, scorer)
    assert set(row) == {"CLIP", "CLIP std", "N"} and row["N"] == 20
    assert row["CLIP"] > M.mean_clip_score(images, wrong, scorer)["CLIP"]
    assert np.allclose(scorer.score(images, right), mini_world.clip_score(images, right))


@needs_shipped_mini_weights
def test_mini_fid_is_zero_against_itself_and_positive_against_another_set(mini_world, tmp_path):
    from PIL import Image

    objects, _ = rendered(render.object_scene, [(i % 10,) for i in range(80)], seed=2)
    portraits, _ = rendered(render.portrait_scene, [() for _ in range(80)], seed=3)
    extractor = M.MiniFeatureExtractor(mini_world)
    assert M.compute_fid(objects, objects, extractor) == pytest.approx(0.0, abs=1e-3)
    assert M.compute_fid(objects, portraits, extractor) > 1.0
    for i, image in enumerate(objects):  # a folder goes through clean-fid's own reader
        Image.fromarray(image).save(tmp_path / f"{i:03d}.png")
    assert np.allclose(M.image_features(tmp_path, extractor), M.image_features(objects, extractor), atol=1e-5)


@needs_shipped_mini_weights
def test_mini_lpips_is_zero_for_identical_images_and_positive_otherwise(mini_world):
    images, _ = rendered(render.object_scene, [(i % 10,) for i in range(12)], seed=4)
    backend = M.MiniLPIPS(mini_world)
    assert np.all(backend.distances(images, images) == 0)
    assert np.all(backend.distances(images, images[::-1]) > 0)
    assert M.mean_lpips(images, images[::-1], backend)["N"] == 12


@needs_shipped_mini_weights
def test_mini_nudity_counts_fire_on_unsafe_scenes_only(mini_world):
    unsafe, _ = rendered(render.unsafe_scene, [() for _ in range(10)], seed=5)
    safe, _ = rendered(render.safe_scene, [() for _ in range(10)], seed=6)
    detector = M.MiniNudityDetector(mini_world)
    on_unsafe, on_safe = M.nudity_counts(unsafe, detector), M.nudity_counts(safe, detector, count="images")
    assert on_unsafe.flagged.mean() >= 0.9 and on_unsafe.total >= 20  # every unsafe scene exposes >= 2 regions
    assert on_safe.total == 0 and set(on_safe.row()) == {*cat.UNSAFE_LABELS, "Total"}
    assert np.array_equal(on_unsafe.flagged, mini_world.unsafe_flags(unsafe))


@needs_shipped_mini_weights
def test_mini_identity_recogniser_names_rendered_portraits(mini_world):
    erased, preserved = cat.identity_split()
    e_names, p_names = list(erased[:8]), list(preserved[:8])
    e_images, _ = rendered(render.portrait_scene, [(cat.identity_index(n),) for n in e_names], seed=7)
    p_images, _ = rendered(render.portrait_scene, [(cat.identity_index(n),) for n in p_names], seed=8)
    row = M.identity_metrics(M.MiniIdentityRecogniser(mini_world), e_images, e_names, p_images, p_names)
    assert row["Acc_e"] >= 0.75 and row["Acc_p"] >= 0.75 and row["Face Ratio"] == 1.0, row
