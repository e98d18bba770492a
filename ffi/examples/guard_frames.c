/*
 * Guards camera frames from C through badexpert's C ABI, the way a ROS 2
 * node handed sensor_msgs/Image messages would.
 *
 *   guard_frames BUNDLE FRAMES ENCODING PADDING
 *
 * FRAMES is a raw file of tightly packed 8-bit images of the bundle's size
 * in ENCODING (mono8, rgb8 or bgr8). Each image is copied into a buffer whose
 * rows are PADDING bytes longer than the image's (filled with junk the guard
 * must ignore), as camera drivers pad rows, and guarded. Prints one line per
 * frame: index, class, score, accepted (1) or rejected (0).
 *
 * Build: cc -I ffi ffi/examples/guard_frames.c target/release/libbadexpert.a -lpthread -ldl -lm
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "badexpert.h"

static int fail(const char *what) {
    const char *message = badexpert_last_error();
    fprintf(stderr, "guard_frames: %s: %s\n", what, message ? message : "(no message)");
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s BUNDLE FRAMES ENCODING PADDING\n", argv[0]);
        return 2;
    }
    const char *encoding = argv[3];
    size_t padding = (size_t)strtoul(argv[4], NULL, 10);

    BadexpertBundle *bundle = NULL;
    BadexpertGuard *guard = NULL;
    BadexpertFrameShape shape;
    if (badexpert_bundle_open(argv[1], &bundle) != BADEXPERT_STATUS_OK) return fail("opening the bundle");
    if (badexpert_bundle_frame_shape(bundle, &shape) != BADEXPERT_STATUS_OK) return fail("reading the frame shape");
    if (badexpert_guard_create(bundle, &guard) != BADEXPERT_STATUS_OK) return fail("making the guard");
    badexpert_bundle_destroy(&bundle); /* the guard keeps what it needs */

    size_t channels = strcmp(encoding, "mono8") == 0 ? 1 : 3;
    size_t row = shape.width * channels, step = row + padding;
    size_t tight = row * shape.height, padded = step * shape.height;
    unsigned char *frame = malloc(tight), *image_data = malloc(padded);
    FILE *frames = fopen(argv[2], "rb");
    if (!frame || !image_data || !frames) {
        fprintf(stderr, "guard_frames: cannot read %s\n", argv[2]);
        return 1;
    }
    memset(image_data, 0xA5, padded);

    size_t index = 0, rejected = 0;
    float threshold = 0;
    while (fread(frame, 1, tight, frames) == tight) {
        for (size_t y = 0; y < shape.height; y++) memcpy(image_data + y * step, frame + y * row, row);
        BadexpertImage image = {shape.width, shape.height, (uint32_t)step, encoding, image_data, padded};
        BadexpertVerdict verdict;
        BadexpertStatus status = badexpert_guard_image(guard, &image, &verdict);
        if (status != BADEXPERT_STATUS_OK) return fail("guarding a frame");
        rejected += !verdict.accepted;
        threshold = verdict.threshold;
        printf("%zu %u %.9g %d\n", index++, verdict.class_index, verdict.score, verdict.accepted ? 1 : 0);
    }
    fprintf(stderr, "guard_frames: %zu frames, %zu rejected (threshold %g)\n", index, rejected, threshold);
    fclose(frames);
    free(frame);
    free(image_data);
    badexpert_guard_destroy(&guard);
    return index > 0 ? 0 : 1;
}
